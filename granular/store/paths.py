"""Every file the pipeline reads or writes, declared once, relative to a project root."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from granular.config import ConfigError


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
    def quarantine_csv(self) -> Path:
        """Every example cleaning rejected, one line each with its reason."""
        return self.quarantine / "rejected.csv"

    @property
    def table_schema(self) -> Path:
        """A table's feature columns as cleaning read them: type, and categories of each."""
        return self.data / "interim" / "schema.json"

    @property
    def accepted_schema(self) -> Path:
        """The schema later tables are compared with: written by the first table validated;
        delete it to accept a table's new schema."""
        return self.data / "schema.json"

    @property
    def derived_taxonomy(self) -> Path:
        """A table's taxonomy, as cleaning built it from the label columns (no taxonomy file given)."""
        return self.data / "interim" / "taxonomy.yaml"

    def taxonomy(self, configured: Path | None) -> Path:
        """The configured taxonomy file (params.yaml's `taxonomy`), or the one cleaning derived."""
        return self.resolve(configured, "taxonomy") if configured else self.derived_taxonomy

    @property
    def validation_report(self) -> Path:
        return self.data / "interim" / "validation.json"

    @property
    def validation_dir(self) -> Path:
        """GX's full result of every suite (result.json) and its Data Docs (data_docs/index.html)."""
        return self.data / "interim" / "validation"

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
    def scratch(self) -> Path:
        """Where a step keeps what it needs while it runs alone (a folder's decoded pictures)."""
        return self.state / "scratch"

    @property
    def fused_dir(self) -> Path:
        return self.data / "fused"

    @property
    def baselines_dir(self) -> Path:
        """The test probabilities of the models the views are compared with (the fuse step fits
        them: a table's boosted trees are a fusion input too), and their fit times."""
        return self.data / "baselines"

    @property
    def student_dir(self) -> Path:
        """The distilled student as a servable bundle, with its predictions and compression report."""
        return self.data / "student"

    @property
    def cascade_dir(self) -> Path:
        """The cascade as a servable folder (its record, the fused and student bundles it runs),
        with its validation and test answers."""
        return self.data / "cascade"

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
    def importance(self) -> Path:
        """Permutation feature importance of each table view and the fused model."""
        return self.evaluation / "importance.json"

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

    @property
    def run_lock(self) -> Path:
        """Held by the pipeline run that writes the project's outputs (granular/runtime/project_lock.py)."""
        return self.state / "run.lock"

    def resolve(self, path: Path, key: str) -> Path:
        """A configured path, set at `key` (named in the error): a relative one is read from the
        project root. It must stay inside the root once `..` and symlinks are followed, so a
        configuration cannot make a run read or write elsewhere on the machine. The exception is
        an absolute data.source.path: the read-only import source may be anywhere (the default
        dataset is a system folder); a relative one stays inside the root as any other."""
        path = Path(path)
        if path.is_absolute() and key in ABSOLUTE_ALLOWED:
            return path
        located = path if path.is_absolute() else self.root / path
        real = located.resolve()  # follows `..` and every symlink that exists
        if not real.is_relative_to(self.root.resolve()):
            shown = "" if real == located else f", which resolves to {real},"
            raise ConfigError(
                f"{key}: {path}{shown} is outside the project root {self.root}: configured paths must "
                "stay inside it (no `..` out of it, no absolute path or symlink elsewhere)"
            )
        return located


# Keys whose absolute paths may lie outside the project root (see ProjectPaths.resolve).
ABSOLUTE_ALLOWED = frozenset({"data.source.path"})
