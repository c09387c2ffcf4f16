"""One typed configuration, loaded from params.yaml (what DVC tracks) plus dotted overrides."""
from __future__ import annotations

import codecs
import difflib
import math
import os
import re
import unicodedata
import zlib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from granular.runtime.redact import has_password, redact_uri


# None: every class counts alike; balanced: inversely to its training count; or class name -> weight.
ClassWeight = Literal["balanced"] | dict[str, Annotated[float, Field(gt=0)]] | None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Section):
    format: Literal["idx", "npz", "folder", "csv", "parquet"] = "idx"
    # Where the raw files come from; they are copied into data/raw/ and tracked there. For csv
    # and parquet: one file, or a folder whose *.csv / *.parquet files share their columns.
    path: Path = Path("/usr/share/datasets/fashion-mnist")


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
    # Named feature subsets, e.g. {coarse: [price, region]}: a view's `features` names one.
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
            unknown = [column for column in group if self.features is not None and column not in self.features]
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
        if fmt not in TABLE_FORMATS and self.table is not None:
            raise ValueError(
                f"data.table is set but source.format is {fmt}, an image format; "
                f"table settings apply to {' and '.join(TABLE_FORMATS)} only"
            )
        return self


class CleanConfig(_Section):
    max_pixel: int = Field(default=255, gt=0)


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
    # Stratified folds of the validation split, over which the fusion is cross-fitted.
    folds: int = Field(default=5, ge=2)


def path_safe(name: str) -> str:
    """A name as a view's name carries it into paths, DVC stage names, MLflow and Prefect:
    accents dropped, any other character but letters, digits, '_', '.' and '-' made '_'."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9_.-]", "_", plain)


class ClusterSegments(_Section):
    """Data granularity of images: one expert per k-means cluster of the training images."""

    by: Literal["clusters"] = "clusters"
    count: int = Field(ge=2)
    # A cluster with fewer training examples is refused (its expert would be noise).
    min_size: int = Field(default=1000, ge=1)
    # The clusters are found on images average-pooled to this size.
    feature_resolution: int = Field(default=7, gt=0)

    @property
    def suffix(self) -> str:
        return f"clusters{self.count}"

    def segment_name(self, value) -> str:
        return f"segment-{value}"  # clusters are numbered


class ColumnSegments(_Section):
    """Data granularity of a table: one expert per frequent value of a categorical column."""

    by: Literal["column"] = "column"
    column: str = Field(min_length=1)
    # A value with fewer training rows gets no expert; its rows go to the global network.
    min_size: int = Field(default=1000, ge=1)

    @property
    def suffix(self) -> str:
        """The column's name as the view's name carries it (`Área Code` -> `Area_Code`); the
        column keeps its own name everywhere else."""
        return path_safe(self.column)

    def segment_name(self, value) -> str:
        return str(value)  # the column's value


# A table view's learner: a network (MLP) or scikit-learn's histogram gradient-boosted trees.
Learner = Literal["mlp", "hgb"]


class _View(_Section):
    """One model's look at the data: a label level of the taxonomy and an input granularity."""

    modality: ClassVar[str]
    trains_networks: ClassVar[bool] = True  # a table's `learner: hgb` view trains boosted trees
    level: str = "fine"
    # Training parameters of this view only, over the shared `train` section.
    train: dict[str, Any] = Field(default_factory=dict)
    # Views under `transfers:` only: the view whose trained network this one starts from.
    start_from: str | None = None
    # A specialist: it learns only from the examples of these classes (each named at any level of
    # the taxonomy: a coarse class stands for the fine classes under it), and the fusion takes its
    # word only on how to share out among them what the views that answer every class give them.
    classes: list[str] | None = Field(default=None, min_length=1)

    @property
    def name(self) -> str:
        """LEVEL-RESOLUTION[-clustersK][-CLASSES] or LEVEL-FEATURES[-hgb][-COLUMN][-CLASSES]:
        valid in paths, DVC stage names and MLflow keys."""
        suffix = f"-{self.segments.suffix}" if self.segments else ""
        suffix += "".join(f"-{path_safe(name)}" for name in self.classes or ())
        return f"{self.global_name}{suffix}"

    @model_validator(mode="after")
    def _a_specialist_is_one_network(self) -> "_View":
        if self.classes is not None and self.segments is not None:
            raise ValueError("classes: a specialist is one network; it takes no segments")
        return self


class ImageView(_View):
    """Images at a resolution (pooled from the full size), optionally one expert per cluster."""

    modality: ClassVar[str] = "images"
    resolution: int = Field(gt=0)
    segments: ClusterSegments | None = None

    @property
    def global_name(self) -> str:
        """The unsegmented view of the same level and input: a segmented view's global model."""
        return f"{self.level}-{self.resolution}"

    def check(self, config: "Config") -> None:
        height, width = config.validate_.image_shape
        resolutions = {"resolution": self.resolution}
        if self.segments:
            resolutions["segments.feature_resolution"] = self.segments.feature_resolution
        for key, resolution in resolutions.items():
            if height % resolution or width % resolution:
                raise ValueError(f"view {self.name}: {key} {resolution} does not divide the image shape {height}x{width}")
        for number, stage in enumerate(config.train_config(self).stages):
            if stage.resolution is not None and self.resolution % stage.resolution:
                raise ValueError(
                    f"view {self.name}: train.stages[{number}].resolution {stage.resolution} does not divide "
                    f"the view's resolution {self.resolution}"
                )


class TableView(_View):
    """A table's feature group (`all`, or a name in data.table.feature_groups), optionally one
    expert per frequent value of a column."""

    modality: ClassVar[str] = "tables"
    features: str = Field(min_length=1)
    segments: ColumnSegments | None = None
    # What learns the view: mlp, a network (the shared `train` section), or hgb, gradient-boosted
    # trees (the shared `trees` section); an hgb view's name ends its LEVEL-FEATURES with -hgb.
    learner: Learner = "mlp"

    @property
    def trains_networks(self) -> bool:
        return self.learner == "mlp"

    @property
    def global_name(self) -> str:
        return f"{self.level}-{self.features}" + ("" if self.trains_networks else f"-{self.learner}")

    def check(self, config: "Config") -> None:
        groups = config.data.table.feature_groups
        if self.features != "all" and self.features not in groups:
            raise ValueError(
                f"view {self.name}: features {self.features!r} is neither 'all' nor a group of "
                f"data.table.feature_groups {sorted(groups)}"
            )
        if not self.trains_networks:
            if self.train:
                raise ValueError(
                    f"view {self.name}: train: sets a network's training, but the view learns {self.learner} "
                    "trees: their settings are the shared `trees` section"
                )
            return
        train = config.train_config(self)
        for number, stage in enumerate(train.stages):
            if stage.resolution is not None:
                raise ValueError(f"view {self.name}: train.stages[{number}].resolution: a table has no resolution")
        if train.heads:
            raise ValueError(f"view {self.name}: train.heads: extra heads are for image views (a table's MLP has none)")


def _view_kind(view: Any) -> str:
    """A view with `features` reads a table; any other, images."""
    if isinstance(view, dict):
        return TableView.modality if "features" in view else ImageView.modality
    return view.modality


ViewConfig = Annotated[
    Annotated[ImageView, Tag(ImageView.modality)] | Annotated[TableView, Tag(TableView.modality)],
    Discriminator(_view_kind),
]


Precision = Literal["auto", "fp32", "bf16"]
# The parts of a network with optimiser settings of their own: the head is the classifier (the
# last linear layer and its dropout), the features everything below it.
Part = Literal["features", "head"]


class PartConfig(_Section):
    """Optimiser settings of one part of the network."""

    lr_scale: float = Field(default=1.0, ge=0)  # times the peak learning rate train.lr
    weight_decay: float | None = Field(default=None, ge=0)  # None: train.weight_decay
    frozen: bool = False  # not trained: its weights and BatchNorm statistics stay as they start


def _something_trains(parts: dict[str, PartConfig]) -> dict[str, PartConfig]:
    if all(parts.get(part, PartConfig()).frozen for part in get_args(Part)):
        raise ValueError("every part of the network is frozen: nothing would train")
    return parts


class StageConfig(_Section):
    """A stage trained before the view's own: the network learns the labels of `level` (the
    view's level or a coarser one) for `epochs`, on images average-pooled to `resolution` where
    given (a divisor of the view's; images only), and the next stage starts from its feature
    extractor (and from its head too when both stages predict the same level)."""

    level: str
    epochs: int = Field(ge=1)
    resolution: int | None = Field(default=None, gt=0)
    parts: dict[Part, PartConfig] = Field(default_factory=dict)

    _trainable = field_validator("parts")(_something_trains)


class TrainConfig(_Section):
    epochs: int = Field(default=4, ge=1)
    batch_size: int = Field(default=128, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # SGD with Nesterov momentum, or AdamW
    lr: float = Field(default=0.01, gt=0)  # the peak learning rate
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    warmup_fraction: float = Field(default=0.25, gt=0, lt=1)  # of all steps, rising to the peak
    weight_decay: float = Field(default=5e-4, ge=0)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    width: int = Field(default=32, ge=4)  # channels of the CNN's first stage; hidden units of the MLP
    depth: int = Field(default=1, ge=1)  # residual blocks per CNN stage; after the MLP's input layer
    dropout: float = Field(default=0.1, ge=0, lt=1)
    hflip: bool = True  # mirror training images at random (only where a mirror image is still valid)
    # Chance that a training image gets a random rectangle blanked (random erasing).
    random_erasing: float = Field(default=0.0, ge=0, le=1)
    # Stop when the validation loss has not improved for this many epochs, keeping the best
    # weights; None trains every epoch.
    early_stopping_patience: int | None = Field(default=None, ge=1)
    tta: bool = True  # predict as the mean of the image and its mirror image (images only)
    # Also average over copies shifted by this many pixels up-left and down-right (mirrored
    # too with tta): 0 = off; 1 costs 3x the inference of tta alone (images only).
    tta_shift: int = Field(default=0, ge=0, le=4)
    # bf16 autocast or full precision: auto = bf16 on CUDA and on CPUs with native bf16 (AMX,
    # AVX-512 BF16), fp32 elsewhere (granular/nn/device.py decides). Also used for inference.
    precision: Precision = "auto"
    # torch.compile the training step: auto = on CUDA only (on a CPU it compiles for ~30 s and
    # then runs no faster).
    compile: Literal["auto", "on", "off"] = "auto"
    seed: int = 0
    # CPU threads for torch; None = every core this process may use.
    threads: int | None = Field(default=None, ge=1)
    # How much each class's examples count in the loss: None = alike; balanced = inversely to
    # the class's training count; or {class name: weight} (granular/core/class_weights.py).
    class_weight: ClassWeight = None
    # Per-part optimiser settings of the view's own training (features, head; see PartConfig).
    parts: dict[Part, PartConfig] = Field(default_factory=dict)
    # Stages trained first, in order, each from the previous one's features (see StageConfig):
    # e.g. the coarse labels before the fine ones. [] trains the view's own stage alone.
    stages: list[StageConfig] = Field(default_factory=list)
    # One trunk, a head per granularity: level -> loss weight of an extra head that learns that
    # coarser taxonomy level from the features halfway up the network (images only). At
    # prediction each extra head's log-probability of a class's ancestor is added to the
    # view's own head (their product, renormalised). {} = the view's own head alone.
    heads: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)

    _trainable = field_validator("parts")(_something_trains)

    @property
    def total_epochs(self) -> int:
        """The epochs of every stage, the view's own included."""
        return sum(stage.epochs for stage in self.stages) + self.epochs


class TreesConfig(_Section):
    """Gradient-boosted trees (scikit-learn's HistGradientBoostingClassifier): what a table view
    with `learner: hgb` trains, and the boosted-trees baseline of every table run."""

    max_iter: int = Field(default=300, ge=1)  # boosting rounds (one tree per class each)
    learning_rate: float = Field(default=0.1, gt=0)
    max_leaf_nodes: int = Field(default=31, ge=2)
    min_samples_leaf: int = Field(default=20, ge=1)
    l2_regularization: float = Field(default=0.0, ge=0)
    # Stop once the validation loss has not improved for 10 rounds (False: every round).
    early_stopping: bool = True
    class_weight: ClassWeight = None  # as train.class_weight


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


class DistillConfig(_Section):
    """One student network trained on the fused ensemble's probabilities (knowledge
    distillation) at full resolution, then compressed as asked; written to data/student/.
    Every other training setting comes from the shared `train` section."""

    enabled: bool = True
    epochs: int = Field(default=6, ge=1)
    width: int = Field(default=32, ge=4)  # channels of the student CNN's first stage
    depth: int = Field(default=1, ge=1)  # residual blocks per stage
    # The teacher's probabilities p become p^(1/T), renormalised: T > 1 softens them (a fused
    # product of views is sharper than any one view), T < 1 sharpens them.
    temperature: float = Field(default=2.0, gt=0)
    # Targets: alpha * teacher probabilities + (1 - alpha) * the one-hot label.
    alpha: float = Field(default=0.7, ge=0, le=1)
    # Int8 dynamic quantisation of the student's Linear layers (its convolutions stay float).
    quantize: bool = False
    # Zero this share of the student's conv and Linear weights of smallest magnitude; None = off.
    prune_amount: float | None = Field(default=None, gt=0, lt=1)


class SearchRange(_Section):
    """A numeric range of a hyperparameter, drawn log-uniformly when `log`; whole numbers for
    integer settings (width, batch_size)."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "SearchRange":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class TuneConfig(_Section):
    """Hyperparameter search of one view's training (`granular tune VIEW`)."""

    sampler: Literal["tpe", "random", "grid"] = "tpe"
    trials: int = Field(default=20, ge=1)
    epochs: int = Field(default=4, ge=1)  # per trial: short trials rank settings well enough
    pruning: bool = True  # stop a trial whose validation loss is worse than the median so far
    pruning_startup_trials: int = Field(default=3, ge=0)
    seed: int = 0
    # train.<key>: a range {low, high, log} or a list of choices (the grid sampler takes lists only).
    space: dict[str, SearchRange | list[Any]] = Field(default_factory=dict)

    @field_validator("space")
    @classmethod
    def _keys_are_train_settings(cls, space: dict) -> dict:
        tunable = set(TrainConfig.model_fields) - {"epochs", "seed", "threads"}
        unknown = sorted(set(space) - tunable)
        if unknown:
            raise ValueError(f"{unknown} cannot be tuned; the tunable train settings are {sorted(tunable)}")
        return space

    @model_validator(mode="after")
    def _grid_needs_choices(self) -> "TuneConfig":
        ranges = sorted(key for key, value in self.space.items() if isinstance(value, SearchRange))
        if self.sampler == "grid" and ranges:
            raise ValueError(f"the grid sampler needs lists of choices; {ranges} are ranges")
        return self


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

    # The test metric the gains below are measured in (the best single view is the best in it);
    # None = accuracy, or r2 for a regression target.
    metric: GateMetric | None = None
    # fused test `metric` - the best single fine view's must exceed this
    min_gain_over_best_single: float = Field(default=0.0, ge=-1, le=1)
    # ... and that gain must be significant: mcnemar = McNemar's test of the two on the test set
    # gives p < max_p_value, interval = the low end of the paired bootstrap interval of the gain
    # exceeds min_gain_over_best_single, none = not checked.
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

    @model_validator(mode="after")
    def _significance_of_accuracy(self) -> "PromotionConfig":
        if self.metric not in (None, "accuracy", "r2") and self.significance != "none":
            raise ValueError(
                f"metric {self.metric}: significance {self.significance} tests a gain in accuracy (McNemar's test, "
                "the paired interval), or in R² for a regression; set significance: none to gate on another metric"
            )
        return self


class ServingConfig(_Section):
    # The MLflow registered model every run's fused model is a version of.
    model_name: str = Field(default="granular-fused", min_length=1)
    # Below this fine-label confidence the served answer backs off to the first coarser level
    # whose best class reaches it (or the coarsest); None = always answer the fine label.
    backoff_threshold: float | None = Field(default=None, gt=0, le=1)


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


class Config(_Section):
    data: DataConfig = DataConfig()
    clean: CleanConfig = CleanConfig()
    validate_: ValidateConfig = Field(default=ValidateConfig(), alias="validate")
    # The label hierarchy (granular/core/taxonomy.py). A table may leave it null: cleaning then
    # builds it from the target and data.table.ancestors columns.
    taxonomy: Path | None = Path("data/taxonomy.yaml")
    split: SplitConfig = SplitConfig()
    # Keyed by view name, so DVC names each view's stages after it and tracks its keys apart.
    views: dict[str, ViewConfig] = {
        "fine-28": ImageView(level="fine", resolution=28),
        "fine-14": ImageView(level="fine", resolution=14),
        "coarse-28": ImageView(level="coarse", resolution=28),
    }
    # Views trained in pairs, side by side (deep mutual learning; the pairs are `cotrain`), declared
    # as views are. Kept apart in params.yaml so that dvc.yaml trains each pair in one stage; in
    # `views` too once loaded, after the views declared there.
    cotrained: dict[str, ViewConfig] = {}
    cotrain: dict[str, CotrainPair] = {}
    # Views that start from another view's trained network (model granularity: its feature
    # extractor, its head too when both learn the same level), declared as views are, plus
    # `start_from: VIEW`. Kept apart in params.yaml so that dvc.yaml can make each one's training
    # depend on its source's model; in `views` too once loaded (every step treats them alike),
    # each after its source.
    transfers: dict[str, ViewConfig] = {}
    train: TrainConfig = TrainConfig()
    trees: TreesConfig = TreesConfig()
    fusion: FusionConfig = FusionConfig()
    distill: DistillConfig = DistillConfig()
    tune: TuneConfig = TuneConfig()
    tracking: TrackingConfig = TrackingConfig()
    promotion: PromotionConfig = PromotionConfig()
    serving: ServingConfig = ServingConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _every_view_in_views(cls, data: Any) -> Any:
        """`views` gets the co-trained views, then the transfers, after those declared there, so
        that every step finds each view there; params.yaml keeps each kind under its own key (as
        `as_dict` gives them back) for dvc.yaml's stages. A view that starts from another belongs
        under `transfers` alone."""
        if not isinstance(data, dict):
            return data
        sections = {key: data.get(key) or {} for key in VIEW_SECTIONS}
        if "views" not in data:  # the default views, then the others
            sections["views"] = cls.model_fields["views"].default
        if not all(isinstance(section, dict) for section in sections.values()):
            return data  # pydantic says what is wrong with it
        merged: dict[str, Any] = {}
        for section, views in sections.items():
            for key, view in views.items():
                if key in merged:
                    raise ValueError(f"{section}.{key}: a view of that name is declared already")
                starts = _start_from(view) is not None
                if starts and section != "transfers":
                    raise ValueError(
                        f"{section}.{key}.start_from: a view that starts from another is declared under "
                        "`transfers:`, so that DVC trains it after its source"
                    )
                if section == "transfers" and not starts:
                    raise ValueError(f"transfers.{key}.start_from: name the view whose trained network it starts from")
                merged[key] = view
        if len(merged) == len(sections["views"]):
            return data
        return {**data, "views": merged}

    @field_validator("views")
    @classmethod
    def _views_named_by_their_spec(cls, views: dict[str, ViewConfig]) -> dict[str, ViewConfig]:
        if not views:
            raise ValueError("at least one view is needed")
        for key, view in views.items():
            if key != view.name:
                raise ValueError(f"view {key!r} must be named {view.name!r} after its spec")
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", key):  # names become paths, stage names, metric keys
                raise ValueError(f"view {key!r}: use letters, digits, '_', '.' and '-' only")
            if view.segments and view.global_name not in views:
                raise ValueError(
                    f"view {key!r} trains one expert per segment; its global model, view "
                    f"{view.global_name!r}, must be declared too"
                )
        return views

    @property
    def specialists(self) -> dict[str, list[str]]:
        """The views that learn some of the classes (`classes:`), by name."""
        return {name: view.classes for name, view in self.views.items() if view.classes is not None}

    @model_validator(mode="after")
    def _specialists_beside_views_of_every_class(self) -> "Config":
        if self.specialists and len(self.specialists) == len(self.views):
            raise ValueError(
                "views: every view is a specialist (classes:); the fusion needs one view that answers every class"
            )
        return self

    def with_views(self, names: list[str]) -> "Config":
        """The same configuration over fewer views (those that finished training)."""
        return self.model_copy(update={
            "views": {name: self.views[name] for name in names},
            "cotrained": {name: view for name, view in self.cotrained.items() if name in names},
            "cotrain": {key: pair for key, pair in self.cotrain.items() if {pair.first, pair.second} <= set(names)},
            "transfers": {name: view for name, view in self.transfers.items() if name in names},
        })

    def pair_of(self, view_name: str) -> str | None:
        """The `cotrain` pair that trains view `view_name`, or None."""
        return next((key for key, pair in self.cotrain.items() if view_name in (pair.first, pair.second)), None)

    @property
    def regression(self) -> bool:
        """The target is a quantity (data.table.task: regression), not class labels."""
        return self.data.table is not None and self.data.table.task == "regression"

    def learns_value(self, view: ViewConfig) -> bool:
        """The view predicts a regression target's value (level fine), not classes."""
        return self.regression and view.level == "fine"

    def view(self, name: str) -> ViewConfig:
        if name not in self.views:
            raise KeyError(f"no view named {name!r}; views are {list(self.views)}")
        return self.views[name]

    def train_config(self, view: ViewConfig) -> TrainConfig:
        """The shared training parameters with the view's own on top. Unless the view sets its
        own seed, it draws from train.seed offset by its name: views are independent models,
        and independent draws make their errors less alike, which is what fusion feeds on."""
        seed = self.train.seed + zlib.crc32(view.name.encode()) % 10_000
        return TrainConfig.model_validate({**self.train.model_dump(), "seed": seed, **view.train})

    @model_validator(mode="after")
    def _views_are_trainable(self) -> "Config":
        for view in self.views.values():
            try:
                self.train_config(view)
            except ValidationError as error:
                first = error.errors()[0]
                key = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"view {view.name}: train.{key}: {first['msg']}") from None
        return self

    @model_validator(mode="after")
    def _views_fit_the_source(self) -> "Config":
        """Table views for a table, image views for images, each checked against the data."""
        modality = self.data.modality
        for view in self.views.values():
            if view.modality != modality:
                kind, needs = {
                    "tables": ("a table (csv/parquet)", "features: all or a feature group"),
                    "images": ("images", "a resolution"),
                }[modality]
                raise ValueError(f"view {view.name}: the source holds {kind}, so the view needs {needs}")
            view.check(self)
        if self.taxonomy is None and modality == "images":
            raise ValueError("taxonomy: images need a taxonomy file (only a table can derive one from its columns)")
        if modality == "tables" and self.distill.enabled:
            raise ValueError("distill.enabled: the student network is for images; set it to false for a table")
        return self

    @model_validator(mode="after")
    def _pairs_of_cotrained_views(self) -> "Config":
        """Each pair is two views of `cotrained` that learn the same level, each view in one
        pair; each trains in one stage (no `train.stages`, no extra heads), one network (not
        segmented)."""
        paired: dict[str, str] = {}
        for key, pair in self.cotrain.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
                raise ValueError(f"cotrain.{key}: use letters, digits, '_', '.' and '-' only")
            for side in ("first", "second"):
                name = getattr(pair, side)
                if name not in self.cotrained:
                    raise ValueError(f"cotrain.{key}.{side}: {name!r} is not a view of `cotrained:` {list(self.cotrained)}")
                if name in paired:
                    raise ValueError(f"cotrain.{key}.{side}: view {name} is co-trained in pair {paired[name]} already")
                paired[name] = key
                view, train = self.views[name], self.train_config(self.views[name])
                if not view.trains_networks:
                    raise ValueError(f"cotrained.{name}: a co-trained view trains a network, not {view.learner} trees")
                if view.segments or view.classes or train.stages or train.heads:
                    raise ValueError(
                        f"cotrained.{name}: a co-trained view is one network trained in one stage on every "
                        "example (no segments, classes, train.stages or train.heads)"
                    )
            if self.views[pair.first].level != self.views[pair.second].level:
                raise ValueError(f"cotrain.{key}: {pair.first} and {pair.second} must learn the same level")
        unpaired = [name for name in self.cotrained if name not in paired]
        if unpaired:
            raise ValueError(f"cotrained: {', '.join(unpaired)} in no pair of `cotrain:`, so never trained")
        return self

    @model_validator(mode="after")
    def _transfers_fit_their_sources(self) -> "Config":
        """Each transfer starts from a view declared before it (so none starts from itself, in a
        loop or from a view trained after it) whose network has the same shape: one network,
        the same width and depth (and, for a table, the same features)."""
        names = list(self.views)
        for name in self.transfers:
            view = self.views[name]
            key, source = f"transfers.{name}.start_from", view.start_from
            if source not in self.views or names.index(source) >= names.index(name):
                raise ValueError(f"{key}: {source!r} is not a view declared before it (views first, then transfers in order)")
            origin = self.views[source]
            for end in (view, origin):
                if not end.trains_networks:
                    raise ValueError(f"{key}: view {end.name} learns {end.learner} trees: a transfer hands over a network")
            if origin.segments:
                raise ValueError(f"{key}: view {source} trains one expert per segment; start from a view of one network")
            if isinstance(view, TableView) and view.features != origin.features:
                raise ValueError(f"{key}: view {source} reads the features {origin.features!r}, this one {view.features!r}")
            mine, theirs = self.train_config(view), self.train_config(origin)
            for setting in ("width", "depth"):
                if getattr(mine, setting) != getattr(theirs, setting):
                    raise ValueError(
                        f"{key}: train.{setting} is {getattr(mine, setting)} here but {getattr(theirs, setting)} "
                        f"in view {source}: the network must have the same shape"
                    )
        return self

    @model_validator(mode="after")
    def _regression_settings(self) -> "Config":
        """A regression target's views learn the number (level fine) or a level of its bins;
        what only a classifier has (class weights, a decision threshold, back-off, hierarchy and
        class metrics, the class-probability fusions) is refused, as are the network hand-overs
        (transfers, co-training, staged and multi-head training) a regression network lacks."""
        table = self.data.table
        if table is None or table.task != "regression":
            return self
        levels = ["fine", *table.bins]
        for view in self.views.values():
            if view.level not in levels:
                raise ValueError(f"view {view.name}: level {view.level!r} is not fine (the target) or a level of data.table.bins {levels[1:]}")
            if view.trains_networks and (self.train_config(view).stages or self.train_config(view).heads):
                raise ValueError(f"view {view.name}: train.stages and train.heads are for classes; a regression view trains in one stage")
            if view.classes is not None:
                raise ValueError(f"view {view.name}: classes: a specialist learns some of the classes; a regression target has none")
        refused = {
            "taxonomy": self.taxonomy is not None and "a regression target's levels are its bins (data.table.bins)",
            "transfers": bool(self.transfers) and "a transfer hands over a classifier",
            "cotrained": bool(self.cotrained) and "co-training pulls class probabilities together",
            "train.class_weight": self.train.class_weight is not None and "class weights are for classes",
            "trees.class_weight": self.trees.class_weight is not None and "class weights are for classes",
            "fusion.threshold_metric": self.fusion.threshold_metric is not None and "a threshold decides between two classes",
            "fusion.strategy": self.fusion.strategy not in ("auto", "stacking", "best_view")
            and "a regression's views are fused by stacking or best_view",
            "serving.backoff_threshold": self.serving.backoff_threshold is not None and "back-off is between class levels",
            "promotion.metric": self.promotion.metric not in (None, *REGRESSION_METRICS)
            and f"a regression is gated on {', '.join(REGRESSION_METRICS)}",
            "promotion.min_metrics": any(m not in REGRESSION_METRICS for m in self.promotion.min_metrics)
            and f"a regression's floors are on {', '.join(REGRESSION_METRICS)}",
            "promotion.max_mistake_severity": self.promotion.max_mistake_severity is not None and "it is a class hierarchy's",
            "promotion.min_hierarchical_f1": self.promotion.min_hierarchical_f1 is not None and "it is a class hierarchy's",
            "promotion.min_level_accuracy": bool(self.promotion.min_level_accuracy) and "it is a class hierarchy's",
        }
        for key, why in refused.items():
            if why:
                raise ValueError(f"{key}: not for a regression target (data.table.task: regression): {why}")
        return self

    @model_validator(mode="after")
    def _one_way_to_decide(self) -> "Config":
        if self.fusion.threshold_metric and self.serving.backoff_threshold is not None:
            raise ValueError(
                "fusion.threshold_metric decides between two classes, serving.backoff_threshold backs off to coarser "
                "levels: set one of them"
            )
        return self

    @model_validator(mode="after")
    def _relative_paths_stay_in_project(self) -> "Config":
        """Refused at once: a relative path whose `..` climbs out of the project root. Absolute
        paths and symlinks need the root, so ProjectPaths.resolve checks them where they are used."""
        for key, path in config_paths(self).items():
            if not path.is_absolute() and Path(os.path.normpath(path)).parts[:1] == ("..",):
                raise ValueError(f"{key}: {path} leaves the project root; configured paths must stay inside it")
        return self

    def as_dict(self) -> dict[str, Any]:
        """As params.yaml holds it: the co-trained views and the transfers under their own keys alone."""
        settings = self.model_dump(mode="json", by_alias=True)
        apart = {*self.cotrained, *self.transfers}
        settings["views"] = {name: view for name, view in settings["views"].items() if name not in apart}
        return settings


# Where params.yaml declares views, in the order they train: each kind has its own DVC stages.
VIEW_SECTIONS = ("views", "cotrained", "transfers")


def _start_from(view: Any) -> str | None:
    return view.get("start_from") if isinstance(view, dict) else getattr(view, "start_from", None)


def config_paths(section: BaseModel, prefix: str = "") -> dict[str, Path]:
    """Every path set in a configuration, by its dotted key (data.source.path, taxonomy, ...)."""
    found: dict[str, Path] = {}
    for name, field in type(section).model_fields.items():
        key = f"{prefix}{field.alias or name}"
        value = getattr(section, name)
        children = value.items() if isinstance(value, dict) else [("", value)]
        for child_key, child in children:
            dotted = f"{key}.{child_key}" if child_key else key
            if isinstance(child, Path):
                found[dotted] = child
            elif isinstance(child, BaseModel):
                found.update(config_paths(child, f"{dotted}."))
    return found


class ConfigError(ValueError):
    """params.yaml or an override is wrong; the message says which key and why."""


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `dotted.key=value` override in place; the value is parsed as YAML."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {assignment!r} is not of the form key=value")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {assignment!r}: {part!r} is not a section")
        node = child
    try:
        node[leaf] = yaml.safe_load(text)
    except yaml.YAMLError as error:  # a python/object tag among them: never constructed
        raise ConfigError(f"override {assignment!r}: not valid YAML: {error}") from None


def load_config(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read params.yaml, apply `key=value` overrides, and validate the whole into a Config."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"no parameters file at {path}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {error.start}: 0x{error.object[error.start]:02x})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(_problem(e, path, overrides) for e in error.errors())
        raise ConfigError(problems) from None


def _problem(error: dict, path: Path, overrides: list[str] | tuple[str, ...]) -> str:
    """One validation error, said where it came from (the --set that set the key, or the file)
    and, for a key that does not exist, with the nearest one that does."""
    loc = [str(part) for part in error["loc"] if not str(part).startswith(("function-", "tagged-union"))]
    text = error["msg"].removeprefix("Value error, ")
    about_view = re.match(r"view (\S+): ([\w.\[\]]+):", text)  # a check of the whole configuration
    if not loc and about_view:
        loc = ["views", about_view.group(1), *about_view.group(2).split(".")]
        text = text[about_view.end():].strip()
    key = ".".join(loc)
    source = str(path)
    for assignment in overrides:
        set_key = assignment.partition("=")[0]
        if key == set_key or key.startswith(f"{set_key}.") or set_key.startswith(f"{key}."):
            source = f"--set {assignment}"
    message = f"{source}: {key}: {text}" if key else f"{source}: {text}"
    if "Extra inputs are not permitted" in text and loc:
        nearest = difflib.get_close_matches(loc[-1], sorted(_setting_names(Config)), n=1, cutoff=0.75)
        if nearest:
            message += f" (did you mean {'.'.join([*loc[:-1], nearest[0]])}?)"
    return message


def _setting_names(model: type[BaseModel], seen: set | None = None) -> set[str]:
    """Every key name of a configuration section and the sections inside it, their aliases too."""
    seen = set() if seen is None else seen
    if model in seen:
        return set()
    seen.add(model)
    names = set()
    for name, field in model.model_fields.items():
        names |= {name, field.alias} - {None}
        stack = [field.annotation]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                names |= _setting_names(annotation, seen)
            stack.extend(get_args(annotation))
    return names
