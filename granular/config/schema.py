"""The sections of params.yaml that are neither views nor training recipes: where the data is and
how it is checked and split, and how the views' answers are fused, gated, served and scheduled."""
from __future__ import annotations

import codecs
import math
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from granular.config.feature_groups import entry_columns
from granular.runtime.redact import has_password, redact_uri


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Section):
    format: Literal["idx", "npz", "folder", "csv", "parquet"] = "idx"
    # Where the raw files come from; they are copied into data/raw/ and tracked there. For csv
    # and parquet: one file, or a folder whose *.csv / *.parquet files share their columns.
    path: Path = Path("/usr/share/datasets/fashion-mnist")
    # The images' colour (folder and npz): grey pictures are read as luminance, one channel;
    # rgb keeps three channels, (N, H, W, 3) in an npz. IDX files hold grey images.
    color: Literal["grey", "rgb"] = "grey"


TABLE_FORMATS = ("csv", "parquet")


class TableConfig(_Section):
    """How to read a user's table (csv or parquet): which column is what."""

    target: str = Field(min_length=1)  # the fine label column
    id: str | None = None  # a row id column; duplicates are cleaned (granular/modalities/tables/clean.py)
    # The feature columns; None = every column but the target, the id, the ancestor columns and
    # those of `exclude`.
    features: list[str] | None = Field(default=None, min_length=1)
    exclude: list[str] = Field(default_factory=list)  # with features: null, columns never used
    # Overrides of the inferred types (numeric dtype -> numeric, anything else -> categorical).
    types: dict[str, Literal["numeric", "categorical"]] = Field(default_factory=dict)
    # Taxonomy level -> the column holding that level's label, finer levels first (e.g.
    # {coarse: category}); builds the taxonomy when no taxonomy file is given.
    ancestors: dict[str, str] = Field(default_factory=dict)
    # Named feature subsets, e.g. {coarse: [price, region], mfcc: ["mfcc_*"]}: a view's `features`
    # names one. Each entry is a feature column or a glob of them (granular/config/feature_groups.py).
    feature_groups: dict[str, list[str]] = Field(default_factory=dict)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)  # a table has no official test split
    # A column that gives each row's split: train, val (or validation) or test, in any case.
    # Without val rows, split.val_fraction of the train rows validate. None: test_fraction.
    split: str | None = None
    # classification: the target holds class labels. regression: it holds a quantity, predicted
    # as a number; its coarser levels are bins of it (`bins`).
    task: Literal["classification", "regression"] = "classification"
    # regression: each coarser level as cut points of the target, finest level first, e.g.
    # {band: [100, 200, 300], tier: [200]}: a bin runs from one cut up to (not including) the
    # next; a coarser level's cuts are among the finer level's, so its bins hold whole finer bins.
    bins: dict[str, list[float]] = Field(default_factory=dict)
    delimiter: str = Field(default=",", min_length=1, max_length=1)  # csv only
    encoding: str = "utf-8"  # csv only

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
        return encoding

    @model_validator(mode="after")
    def _columns_have_one_role(self) -> "TableConfig":
        labels = {"target": self.target, "id": self.id, "split": self.split,
                  **{f"ancestors.{k}": v for k, v in self.ancestors.items()}}
        named = [column for column in labels.values() if column is not None]
        repeated = sorted({column for column in named if named.count(column) > 1})
        if repeated:
            raise ValueError(f"column(s) {repeated} have more than one role among target, id, split and ancestors")
        not_features = {column: role for role, column in labels.items() if column is not None}
        listed = {"features": self.features or [], "types": list(self.types)}
        listed |= {f"feature_groups.{name}": group for name, group in self.feature_groups.items()}
        for key, columns in listed.items():
            clashes = [f"{column} (the {not_features[column]})" for column in columns if column in not_features]
            if clashes:  # a label among the features would leak the answer
                raise ValueError(f"{key}: {', '.join(clashes)} cannot be a feature")
        if self.exclude and self.features is not None:
            raise ValueError("exclude: with features listed, leave the column out of the list instead")
        for key, columns in listed.items():
            excluded = [column for column in columns if column in self.exclude]
            if excluded:
                raise ValueError(f"{key}: {excluded} are excluded (data.table.exclude)")
        stray = [column for column in self.types if self.features is not None and column not in self.features]
        if stray:
            raise ValueError(f"types: {stray} are not among the features {self.features}")
        for name, group in self.feature_groups.items():
            if not group:
                raise ValueError(f"feature_groups.{name} is empty")
            unknown = [entry for entry in group if self.features is not None and not entry_columns(entry, self.features)]
            if unknown:
                raise ValueError(f"feature_groups.{name}: {unknown} are not among the features {self.features}")
        return self

    @model_validator(mode="after")
    def _bins_of_a_quantity(self) -> "TableConfig":
        if self.task == "classification":
            if self.bins:
                raise ValueError("bins: bins are coarser levels of a quantity; set task: regression to predict one")
            return self
        if self.ancestors:
            raise ValueError("ancestors: a regression target's coarser levels are bins of it (data.table.bins), not columns")
        finer: list[float] | None = None
        for level, cuts in self.bins.items():
            if level == "fine":
                raise ValueError("bins.fine: `fine` is the target itself; name the binned level otherwise")
            if not cuts or not all(math.isfinite(c) for c in cuts) or any(a >= b for a, b in zip(cuts, cuts[1:])):
                raise ValueError(f"bins.{level}: give finite cut points in increasing order, e.g. [100, 200]; got {cuts}")
            if finer is not None and not set(cuts) <= set(finer):
                raise ValueError(
                    f"bins.{level}: cuts {sorted(set(cuts) - set(finer))} are not cuts of the finer level before it, "
                    "so its bins would split finer ones"
                )
            finer = cuts
        return self


class DataConfig(_Section):
    source: SourceConfig = SourceConfig()
    # csv / parquet only (required there): the columns' roles (TableConfig); None for images.
    table: TableConfig | None = None
    # At most this many examples from each official split (train, test); None = all.
    limit: int | None = Field(default=None, gt=0)
    limit_seed: int = 0

    @property
    def modality(self) -> str:
        """images or tables: what the source holds, and so which implementation reads it
        (granular/modalities/__init__.py picks it)."""
        return "tables" if self.source.format in TABLE_FORMATS else "images"

    @model_validator(mode="after")
    def _table_settings_match_the_format(self) -> "DataConfig":
        fmt = self.source.format
        if fmt in TABLE_FORMATS and self.table is None:
            raise ValueError(f"source.format {fmt} reads a table: set data.table (at least data.table.target)")
        if self.source.color == "rgb" and fmt not in ("folder", "npz"):
            raise ValueError(f"source.color rgb is for folder and npz images; {fmt} holds grey ones")
        if fmt not in TABLE_FORMATS and self.table is not None:
            raise ValueError(
                f"data.table is set but source.format is {fmt}, an image format; "
                f"table settings apply to {' and '.join(TABLE_FORMATS)} only"
            )
        return self


class CleanConfig(_Section):
    max_pixel: int = Field(default=255, gt=0)
    # A folder's pictures of another size than validate.image_shape: `crop` scales each to cover
    # it and cuts the middle out, `pad` scales each to fit inside and fills the margins with black,
    # `stretch` scales each side to it (the aspect ratio changes).
    fit: Literal["crop", "pad", "stretch"] = "crop"
    # A picture whose shorter side has fewer pixels is set aside, with the file that held it.
    min_side: int = Field(default=8, ge=1)


# The least examples of a class by default: images, per official split; a table, in all (a class
# needs a few rows in each of train, validation and test).
MIN_PER_CLASS = {"images": 100, "tables": 10}


class ValidateConfig(_Section):
    image_shape: tuple[int, int] = (28, 28)
    # The least examples of each class; None: MIN_PER_CLASS of the data's modality.
    min_per_class: int | None = Field(default=None, ge=1)
    # Validation fails when cleaning set aside more than this share of the examples.
    max_quarantined_share: float = Field(default=0.1, ge=0, le=1)

    def least_per_class(self, modality: str) -> int:
        return MIN_PER_CLASS[modality] if self.min_per_class is None else self.min_per_class


class SplitConfig(_Section):
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    seed: int = 0
    # Stratified folds of the validation split, over which the fusion is cross-fitted; of the
    # training and validation rows together where a table fuses out of fold.
    folds: int = Field(default=5, ge=2)
    # A table of at most this many training and validation rows fuses out of fold: each view is
    # also trained `folds` times, on all but one fold, and the fusion (its strategy, weights and
    # decision threshold) is fitted on every row's answers from the models that did not learn
    # it. Larger tables, and images, fuse on the validation split alone. 0 = never.
    out_of_fold_rows: int = Field(default=10_000, ge=0)


# The fusion strategies (granular/core/fusion.py), each a class there.
FusionStrategy = Literal["product", "convex", "stacking", "gating", "best_view"]


class StackingConfig(_Section):
    # Inverse strength of the L2 penalty of the logistic-regression meta-learner (scikit-learn's C).
    c: float = Field(default=1.0, gt=0)


class GatingConfig(_Section):
    hidden: int = Field(default=8, ge=0)  # tanh units of the gate network; 0 = a linear gate
    l2: float = Field(default=1e-3, ge=0)  # penalty on the gate's weights (half their squared sum)
    seed: int = 0  # the gate's initial weights


class FusionConfig(_Section):
    # One strategy, or auto: the candidate with the lowest validation log-loss, cross-fitted over the folds.
    strategy: FusionStrategy | Literal["auto"] = "auto"
    candidates: list[FusionStrategy] = Field(default=list(get_args(FusionStrategy)), min_length=1)
    stacking: StackingConfig = StackingConfig()
    gating: GatingConfig = GatingConfig()
    # When a view fails to train: fuse the views that finished (True), or fail the run (False).
    allow_missing_views: bool = False
    # A target of two classes: answer `positive_class` (None = the rarer in training) where its
    # fused probability reaches the cut that scores best in this metric on the cross-fitted
    # validation predictions (granular/core/threshold.py); None = the most probable class.
    threshold_metric: Literal["accuracy", "balanced_accuracy", "f1"] | None = None
    positive_class: str | None = None

    @field_validator("candidates")
    @classmethod
    def _candidates_once_each(cls, candidates: list[str]) -> list[str]:
        repeated = sorted({name for name in candidates if candidates.count(name) > 1})
        if repeated:
            raise ValueError(f"candidates {repeated} are listed more than once")
        return candidates


class TrackingConfig(_Section):
    experiment: str = "granular"
    # None: MLFLOW_TRACKING_URI if set, else a SQLite store in the project.
    uri: str | None = None

    @field_validator("uri")
    @classmethod
    def _no_password(cls, uri: str | None) -> str | None:
        """params.yaml is versioned and logged: a password in it would be shared with both."""
        if uri is not None and has_password(uri):
            raise ValueError(
                f"{redact_uri(uri)} holds a password: remove it from the URI and set the environment "
                "variables MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead"
            )
        return uri


# The test metrics a promotion can be gated on (granular/core/promotion.py).
GateMetric = Literal["accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "pr_auc", "r2"]
# Those of a regression target; the others are a classifier's.
REGRESSION_METRICS = ("r2",)


class PromotionConfig(_Section):
    """When a newly registered fused model becomes the `champion` (granular/core/promotion.py). Each
    gain must be MORE than its margin, so a margin of 0.0 asks for strictly better, and a tie
    keeps the current champion; by default the gain over the best single view must be significant
    too, so that a test-set fluke does not move the champion."""

    # The one test metric of the run: the best single view is the best in it, the fused model's
    # gain over it, its interval and its test are in it, and so is the floor the fused model must
    # beat (the majority class, a regression's mean); None = accuracy, or r2 for a regression.
    metric: GateMetric | None = None
    # fused test `metric` - the best single fine view's must exceed this
    min_gain_over_best_single: float = Field(default=0.0, ge=-1, le=1)
    # ... and that gain must be significant: mcnemar = the paired test of `metric` on the test set
    # gives p < max_p_value (McNemar's test for accuracy, a paired bootstrap test for another
    # class score, a paired t-test of squared errors for r2), interval = the low end of the paired
    # bootstrap interval of the gain exceeds min_gain_over_best_single, none = not checked.
    significance: Literal["mcnemar", "interval", "none"] = "mcnemar"
    max_p_value: float = Field(default=0.05, gt=0, le=1)
    # fused test `metric` - the current champion's must exceed this (no champion: passes)
    min_gain_over_champion: float = Field(default=0.0, ge=-1, le=1)
    # Floors on the fused model's test metrics, e.g. {balanced_accuracy: 0.7, pr_auc: 0.5}.
    min_metrics: dict[GateMetric, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    # Hierarchical conditions on the fused model's test metrics; None (or {}) = not checked.
    max_mistake_severity: float | None = Field(default=None, ge=0)
    min_hierarchical_f1: float | None = Field(default=None, ge=0, le=1)
    # level -> least accuracy at that coarser level implied by the fine predictions
    min_level_accuracy: dict[str, float] = Field(default_factory=dict)
    # The served cascade's test accuracy may be at most this far below the fused model's, and
    # (with significance: mcnemar) not significantly below it.
    max_cascade_accuracy_drop: float = Field(default=0.001, ge=0, le=1)


class ServingConfig(_Section):
    # The MLflow registered model every run's fused model is a version of.
    model_name: str = Field(default="granular-fused", min_length=1)
    # Below this fine-label confidence the served answer backs off to the first coarser level
    # whose best class reaches it (or the coarsest); None = always answer the fine label.
    backoff_threshold: float | None = Field(default=None, gt=0, le=1)


class ImportanceConfig(_Section):
    """The evaluate step's permutation feature importance of a table's models."""

    # Columns scored per model (each view, the fused model): one that reads more has a random
    # sample of this many scored, drawn from split.seed; 0 = no importance measured.
    max_columns: int = Field(default=1000, ge=0)


class OrchestrationConfig(_Section):
    """Where the Prefect tasks run. The per-view trainings go to the task runner named here."""

    # threads: in the flow's process, as many at once as the machine holds (see train.threads);
    # dask: on a Dask cluster, one training per worker thread (tasks/training.py).
    task_runner: Literal["threads", "dask"] = "threads"
    # The scheduler of a running Dask cluster, e.g. tcp://10.0.0.5:8786; None = a temporary
    # cluster of worker processes on this machine, sized by the two settings below.
    dask_address: str | None = None
    # Worker processes of the temporary cluster; None = as many trainings as the machine holds
    # at train.threads each (one per GPU), as with threads.
    n_workers: int | None = Field(default=None, ge=1)
    threads_per_worker: int = Field(default=1, ge=1)  # trainings at once in each worker
    # A run that finds another run writing the same project waits for it (granular/runtime/project_lock.py)
    # at most this long, then fails naming that run; None = as long as it takes.
    lock_timeout_s: float | None = Field(default=None, ge=0)


class CotrainPair(_Section):
    """Two views of `cotrained` trained side by side, one step of each in turn, each step's loss
    also pulling a network toward the other's predictions on the same examples (deep mutual
    learning, granular/nn/cotrain.py)."""

    first: str
    second: str
    # Of the consistency term (the KL divergence from the partner's probabilities); 0 trains each
    # exactly as it would train alone.
    weight: float = Field(ge=0)
