"""What is predicted: the one shape every problem has, classes or a value (scikit-learn's
classifier/regressor split). A problem owns its fusion, its scores, its baseline (the floor every
model must beat), its significance test and how its fused model's answers are read; the
pipeline asks it and never asks which problem it has. Its values are never carried as
probabilities: a model's outputs are class probabilities for one, values for the other."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from granular.config import Config, ViewConfig
from granular.core.importance import ImportanceScores
from granular.core.partition import TRAIN_SPLIT
from granular.core.promotion import Check
from granular.core.taxonomy import Taxonomy
from granular.store.paths import ProjectPaths


class ProjectReads(Protocol):
    """What a problem reads back from the earlier steps (granular/pipeline/reads.py gives it)."""

    def rows(self, split: str) -> dict[str, np.ndarray]:
        """Every column of splits.npz (label, fold, ...) for the examples of one split."""

    def values(self, split: str) -> np.ndarray:
        """A table's target values of one split's examples."""

    def outputs(self, split: str) -> dict[str, np.ndarray]:
        """Each view's outputs on one split (val, test), as its train step wrote them."""

    def fitting_rows(self) -> dict[str, np.ndarray]:
        """Every column of splits.npz for the rows the fusion is fitted on: the validation split,
        or the training and validation rows of a table that fuses out of fold."""

    def fitting_values(self) -> np.ndarray:
        """A table's target values of those rows."""

    def fitting_outputs(self) -> dict[str, np.ndarray]:
        """Each view's outputs on those rows (out of fold where the rows are)."""

    def specialists(self, taxonomy: Taxonomy) -> dict[str, np.ndarray]:
        """Each specialist view's fine class ids, by name."""

    def test_segments(self, view: ViewConfig) -> tuple[np.ndarray, Any]:
        """A segmented view's segment of each test example, and the segment values its experts
        answer (None: every one)."""


def fitted_on(rows: dict[str, np.ndarray]) -> dict:
    """What the fusion record says of the rows it was fitted on (ProjectReads.fitting_rows): how
    many, in how many folds, and whether out of fold (training rows among them)."""
    return {"rows": int(len(rows["label"])), "folds": int(rows["fold"].max()) + 1,
            "out_of_fold": bool((rows["split"] == TRAIN_SPLIT).any())}


@dataclass(frozen=True)
class TestOutputs:
    """The test outputs of the models beside the views, as the fuse (and distill) steps wrote them."""

    fused: np.ndarray
    baselines: dict[str, np.ndarray]  # by baseline name
    student: dict[str, np.ndarray]  # the distilled student's, by its name; empty without one
    fusion: dict  # the fused model's record
    # The cascade's (data/cascade/predictions.npz: test_proba, test_stage, stages_test_proba) and
    # its stages' names (`stages`); empty without one.
    cascade: dict = field(default_factory=dict)


class Problem(ABC):
    """One kind of target: its names, and what the pipeline asks of it."""

    name: str  # as data.table.task names it (and metrics.json's "task", where it is written)
    headline: str  # the test metric models are compared and promoted on
    headline_label: str  # ... for people
    gain_unit: str  # after "fused - best single view" where the gain is not in accuracy
    floor: str  # the baseline that answers alike for every example: what every model must beat
    epoch_score: tuple[str, str]  # a training record's validation score: its key, and for people
    segment_score: tuple[str, str, str]  # a segment's test score: key, label, format
    report_images: tuple[str, ...]  # the fused model's images in the run's report
    importance: ImportanceScores  # how permutation importance scores a model's answers
    numeric_target: bool  # the target column holds numbers, parsed as such when cleaned

    def view_problem(self, config: Config, view: ViewConfig) -> "Problem":
        """The problem a view solves: this one (a regression's binned view learns classes)."""
        return self

    @abstractmethod
    def fuse(
        self, config: Config, taxonomy: Taxonomy, reads: ProjectReads, served: dict[str, dict[str, np.ndarray]],
    ) -> tuple[dict, dict[str, np.ndarray]]:
        """The fusion of the views (and the `served` baselines' outputs, split -> name -> outputs)
        fitted on validation: its record, and its outputs by key of data/fused/predictions.npz:
        `test_proba` (the fused test outputs), and `val_proba` (cross-fitted) where the problem
        has them."""

    @abstractmethod
    def evaluate(
        self, config: Config, paths: ProjectPaths, taxonomy: Taxonomy, reads: ProjectReads, others: TestOutputs,
    ) -> dict:
        """Every model's test scores with their intervals, the fusion against the best single view
        in the run's one metric (promotion.metric, else the headline) and its paired test,
        written to data/evaluation/ (the images, predictions, per-class scores and the models
        compared); returns metrics.json's content."""

    @abstractmethod
    def floor_outputs(self, train_targets: np.ndarray, sizes: dict[str, int], num_classes: int) -> dict[str, np.ndarray]:
        """The floor baseline's outputs of `sizes[split]` examples each, from the training split's targets."""

    @abstractmethod
    def floor_checks(self, metrics: dict, metric: str) -> list[Check]:
        """The fused model against the floor in `metric`, where the evaluation has it (the promotion gate)."""

    @abstractmethod
    def significance_check(self, metrics: dict, best: str, max_p_value: float) -> Check:
        """The evaluation's paired test of the fused model against `best` in its metric (the promotion gate)."""

    @abstractmethod
    def comparison_rows(self, metrics: dict) -> list[dict[str, str]]:
        """One row of display strings per model: the table the terminal and the report show."""

    @abstractmethod
    def validation_score(self, outputs: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """A trained view's validation score, as its training summary says it."""

    @abstractmethod
    def importance_targets(self, config: Config, taxonomy: Taxonomy, truth: np.ndarray) -> dict[str, np.ndarray]:
        """The views whose permutation importance is measured, each with its test targets."""

    @abstractmethod
    def fused_answers(self, fused) -> Callable[[Any], np.ndarray]:
        """What the fused model answers, as the importance and the latency take it."""
