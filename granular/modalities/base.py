"""The seam between the pipeline and the kind of data it reads: images and tables implement one
protocol, `Modality`, and the pipeline's steps (granular/pipeline/) call it without asking which
one they have. granular/modalities/__init__.py picks the implementation, once, from the config.

What a modality does, step by step:
- import_raw, clean, validate: its own files, faults and expectations;
- examples: every clean example's fine label, official split of origin and id, which the
  modality-free split step turns into train/val/test and folds (`fuses_out_of_fold`: folds of
  a small set's training and validation rows, for the fusion to be fitted on them all);
- view_arrays: one view's arrays per split (what the view step writes and hashes);
- training_data: a view's network inputs, labels and expert plan, and the `ViewReader` that
  turns raw inputs into network inputs and routes them to an expert when the model serves;
- raw_inputs, input_spec: the examples as a model is given them, and how a served model
  checks and shapes what it is sent;
- baselines: models outside the pipeline's views that the evaluation compares with; one that
  can serve joins the fusion as one more input (a table's boosted trees);
- importance_rows: the test examples that measure what each model's answers rest on, where
  the inputs have named features.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from granular.config import Config, ViewConfig
from granular.core.taxonomy import Taxonomy
from granular.core.validation import Validation
from granular.modalities.experts import ExpertPlan, ViewModel, ViewReader
from granular.store.paths import ProjectPaths

if TYPE_CHECKING:  # torch loads only where a network runs
    from granular.nn.inputs import NetworkInputs


@dataclass(frozen=True)
class Baseline:
    """A model outside the pipeline's views, fitted on the same splits: its outputs on the rows the
    fusion is fitted on (out of fold where the views' are) and on the test split (probabilities of
    the fine classes, or a regression target's values, (N, 1)), figures of this machine (its
    train_seconds), and the model itself where it can serve. Its problem's floor
    (granular/problems/: the majority class, the mean value) is one."""

    fusion_outputs: np.ndarray
    test_outputs: np.ndarray
    figures: dict = field(default_factory=dict)
    model: ViewModel | None = None


@dataclass(frozen=True)
class Examples:
    """Every clean example, in the order of clean.npz."""

    labels: np.ndarray  # (N,) fine label ids
    origin: np.ndarray  # (N,) int8: the official split it came from (core.partition.TRAIN or TEST)
    index: np.ndarray  # (N,) its id within its origin
    # (N,) bool: the examples the data itself puts in validation (a table's split column); None
    # or none at all: split.val_fraction of the training examples, drawn.
    given_val: np.ndarray | None = None


@dataclass(frozen=True)
class TrainingData:
    """What a view trains on: network inputs and labels per split, which network learns which
    examples, and how the saved model reads raw inputs."""

    x: dict[str, NetworkInputs]
    y: dict[str, np.ndarray]
    plan: ExpertPlan
    reader: ViewReader


class InputSpec(Protocol):
    """What a served model reads, as written into its bundle (input.json)."""

    def to_json(self) -> dict[str, Any]: ...

    def parse(self, model_input: Any) -> Any:
        """A served request as the model's raw inputs; a ValueError names what does not fit."""

    def example(self, raw: Any) -> Any:
        """A few raw inputs as the served model's input example (its signature is inferred from it)."""


class Modality(Protocol):
    name: str
    # A small set of this kind fuses out of fold (split.out_of_fold_rows): its views are cheap to
    # train again on folds, and its validation split too small to fit a fusion on (tables).
    fuses_out_of_fold: bool

    def import_raw(self, config: Config, paths: ProjectPaths) -> list[Path]: ...

    def clean(self, config: Config, paths: ProjectPaths) -> dict: ...

    def validate(self, config: Config, paths: ProjectPaths, docs_dir: Path) -> Validation: ...

    def examples(self, config: Config, paths: ProjectPaths) -> Examples: ...

    def view_arrays(
        self, config: Config, paths: ProjectPaths, view: ViewConfig, taxonomy: Taxonomy, staging: Path
    ) -> dict[str, dict[str, np.ndarray]]:
        """One view's arrays by split; files the view needs beside them go into `staging`."""

    def networks_in_view(self, config: Config, paths: ProjectPaths, view: ViewConfig) -> int: ...

    def training_data(
        self, config: Config, paths: ProjectPaths, view: ViewConfig, taxonomy: Taxonomy, warn
    ) -> TrainingData: ...

    def student_reader(self, config: Config, paths: ProjectPaths) -> ViewReader:
        """How a distilled student reads raw inputs: the full input, one network."""

    def raw_inputs(
        self, config: Config, paths: ProjectPaths, splits: tuple[str, ...], count: int | None = None
    ) -> dict[str, Any]:
        """The first `count` clean examples of each split, as a model is given them to predict."""

    def input_spec(self, config: Config, paths: ProjectPaths) -> InputSpec: ...

    def load_input_spec(self, spec: dict[str, Any]) -> InputSpec: ...

    def load_reader(self, folder: Path, spec: dict[str, Any]) -> ViewReader: ...

    def baselines(self, config: Config, paths: ProjectPaths) -> dict[str, Baseline]:
        """Models the views are compared with, by name."""

    def importance_rows(self, config: Config, paths: ProjectPaths) -> tuple[Any, np.ndarray] | None:
        """Raw test examples with named features (a table's rows) and their fine labels, for a
        permutation importance; None where features have no names (images)."""
