"""The training recipes: a network's (`train`, its stages and parts), the boosted trees', the
distilled student's, and the hyperparameter search over a view's recipe (`tune`)."""
from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from granular.config.schema import _Section


# None: every class counts alike; balanced: inversely to its training count; or class name -> weight.
ClassWeight = Literal["balanced"] | dict[str, Annotated[float, Field(gt=0)]] | None


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
    epochs: int = Field(default=12, ge=1)
    batch_size: int = Field(default=256, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # SGD with Nesterov momentum, or AdamW
    lr: float = Field(default=0.2, gt=0)  # the peak learning rate
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    warmup_fraction: float = Field(default=0.25, gt=0, lt=1)  # of all steps, rising to the peak
    weight_decay: float = Field(default=5e-4, ge=0)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    width: int = Field(default=32, ge=4)  # channels of the CNN's first stage; hidden units of the MLP
    depth: int = Field(default=1, ge=1)  # residual blocks per CNN stage; after the MLP's input layer
    dropout: float = Field(default=0.0, ge=0, lt=1)
    hflip: bool = True  # mirror training images at random (only where a mirror image is still valid)
    # Chance that a training image gets a random rectangle blanked (random erasing).
    random_erasing: float = Field(default=0.0, ge=0, le=1)
    # Stop when the validation loss has not improved for this many epochs, keeping the best
    # weights; None trains every epoch.
    early_stopping_patience: int | None = Field(default=None, ge=1)
    tta: bool = True  # predict as the mean of the image and its mirror image (images only)
    # Also average over copies shifted by this many pixels up-left and down-right (mirrored
    # too with tta): 0 = off; 1 costs 3x the inference of tta alone (images only).
    tta_shift: int = Field(default=1, ge=0, le=4)
    # bf16 autocast or full precision: auto = bf16 on CUDA and on CPUs with native bf16 (AMX,
    # AVX-512 BF16), fp32 elsewhere (granular/nn/device.py decides). Also used for inference.
    precision: Precision = "auto"
    # torch.compile the training step: auto = on CUDA only (on a CPU it compiles for ~30 s and
    # then runs no faster).
    compile: Literal["auto", "on", "off"] = "auto"
    seed: int = 0
    # CPU threads for torch; None = every core this process may use.
    threads: int | None = Field(default=None, ge=1)
    # A split of images that takes more than this many GiB as the network reads them (float32)
    # stays on disk and is read a batch at a time; a smaller one is read into memory once (faster).
    in_memory_gib: float = Field(default=2.0, ge=0)
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


class DistillConfig(_Section):
    """One student network trained on the fused ensemble's probabilities (knowledge
    distillation) at full resolution, then compressed as asked; written to data/student/.
    Every other training setting comes from the shared `train` section."""

    enabled: bool = False  # retired from the default run: the cascade's first stage serves cheaper and better
    epochs: int = Field(default=2, ge=1)
    # The student's peak learning rate and dropout; None: the shared train section's.
    lr: float | None = Field(default=0.1, gt=0)
    dropout: float | None = Field(default=0.1, ge=0, lt=1)
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
    space: dict[str, SearchRange | list[Any]] = Field(default_factory=lambda: {
        "lr": SearchRange(low=0.01, high=0.2, log=True),
        "weight_decay": SearchRange(low=1e-5, high=2e-3, log=True),
        "label_smoothing": SearchRange(low=0.0, high=0.2),
        "width": [24, 32, 48],
    })

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
