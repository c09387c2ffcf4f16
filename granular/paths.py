"""Every file the pipeline reads or writes, declared once, relative to a project root."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectPaths:
    root: Path

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def raw(self) -> Path:
        return self.data / "raw"

    @property
    def clean(self) -> Path:
        return self.data / "interim" / "clean.npz"

    @property
    def clean_report(self) -> Path:
        return self.data / "interim" / "clean_report.json"

    @property
    def quarantine(self) -> Path:
        return self.data / "quarantine"

    @property
    def validation_report(self) -> Path:
        return self.data / "interim" / "validation.json"

    @property
    def processed(self) -> Path:
        return self.data / "processed"

    @property
    def splits(self) -> Path:
        return self.processed / "splits.npz"

    def view_dir(self, view: str) -> Path:
        return self.processed / view

    def view_split(self, view: str, split: str) -> Path:
        return self.view_dir(view) / f"{split}.npz"

    def model_dir(self, view: str) -> Path:
        return self.data / "models" / view

    def checkpoints(self, view: str) -> Path:
        """Where a view's networks save their resumable state while they train."""
        return self.data / "checkpoints" / view

    @property
    def state(self) -> Path:
        """The tools' own state in the project (git ignores it): the task cache's results, the
        Prefect server's database and the servers' logs."""
        return self.root / ".granular"

    @property
    def fused_dir(self) -> Path:
        return self.data / "fused"

    @property
    def student_dir(self) -> Path:
        """The distilled student as a servable bundle, with its predictions and compression report."""
        return self.data / "student"

    @property
    def evaluation(self) -> Path:
        return self.data / "evaluation"

    @property
    def metrics(self) -> Path:
        return self.evaluation / "metrics.json"

    @property
    def confusion(self) -> Path:
        return self.evaluation / "confusion"

    @property
    def reliability(self) -> Path:
        """One reliability diagram per model, beside the confusion images."""
        return self.evaluation / "reliability"

    @property
    def per_class(self) -> Path:
        """Per-class scores and reliability bins of every model: too long for metrics.json."""
        return self.evaluation / "per_class.json"

    @property
    def latency(self) -> Path:
        """Inference speed of every model: a figure of the machine, so not a DVC metric."""
        return self.evaluation / "latency.json"

    @property
    def test_predictions(self) -> Path:
        """One row per test example: true classes and every model's prediction (DVC plots)."""
        return self.evaluation / "test_predictions.csv"

    @property
    def comparison(self) -> Path:
        return self.evaluation / "comparison.csv"

    def resolve(self, path: Path) -> Path:
        """A configured path: relative ones are read from the project root."""
        return path if path.is_absolute() else self.root / path
