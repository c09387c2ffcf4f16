"""The kinds of view (images at a resolution, a table's feature group) and their names,
LEVEL-RESOLUTION[-grey][-clustersK][-CLASS...] or LEVEL-FEATURES[-hgb][-COLUMN][-CLASS...], as they
appear in paths, DVC stage names and MLflow keys."""
from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from granular.config.schema import _Section

if TYPE_CHECKING:
    from granular.config.root import Config


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
        """LEVEL-RESOLUTION[-grey][-clustersK][-CLASSES] or LEVEL-FEATURES[-hgb][-COLUMN][-CLASSES]:
        valid in paths, DVC stage names and MLflow keys."""
        suffix = f"-{self.segments.suffix}" if self.segments else ""
        suffix += "".join(f"-{path_safe(name)}" for name in self.classes or ())
        return f"{self.global_name}{suffix}"

    @property
    def global_is_the_baseline(self) -> bool:
        """Whether the global model of this segmented view is a baseline the run fits anyway
        (a table's `hgb`), rather than a declared view."""
        return False

    @property
    def global_model(self) -> str:
        """The name the global model of this segmented view is evaluated under: its view's, or
        the baseline's (`hgb`, the learner's name) where that is it."""
        return self.learner if self.global_is_the_baseline else self.global_name

    @model_validator(mode="after")
    def _a_specialist_is_one_network(self) -> "_View":
        if self.classes is not None and self.segments is not None:
            raise ValueError("classes: a specialist is one network; it takes no segments")
        return self


class ImageView(_View):
    """Images at a resolution (pooled from the full size), optionally one expert per cluster."""

    modality: ClassVar[str] = "images"
    resolution: int = Field(gt=0)
    # grey: the view sees the luminance of colour images alone (a colour granularity); None: the
    # images as data.source.color reads them.
    color: Literal["grey"] | None = None
    segments: ClusterSegments | None = None

    @property
    def global_name(self) -> str:
        """The unsegmented view of the same level and input: a segmented view's global model."""
        return f"{self.level}-{self.resolution}" + ("-grey" if self.color else "")

    def check(self, config: "Config") -> None:
        if self.color and config.data.source.color == "grey":
            raise ValueError(f"view {self.name}: color grey is for colour images; data.source.color is grey already")
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

    @property
    def is_the_baseline(self) -> bool:
        """The very model of the boosted-trees baseline (`hgb`) every table run fits and fuses:
        trees on every feature at level fine (the finest of a table's taxonomy, derived from its
        columns or bins), one model of every class."""
        return (self.learner == "hgb" and self.level == "fine" and self.features == "all"
                and self.segments is None and self.classes is None)

    @property
    def global_is_the_baseline(self) -> bool:
        """A segmented view whose global model would be the `hgb` baseline, which every table run
        fits anyway: that global view is not declared (it would be refused as the baseline)."""
        return self.segments is not None and self.model_copy(update={"segments": None}).is_the_baseline

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
            if self.is_the_baseline:  # the fusion would take the same input twice
                raise ValueError(
                    f"view {self.name}: the `hgb` baseline is this model (boosted trees on every feature at "
                    "level fine), fitted and fused in every table run already; declare a view that adds "
                    "something: a network (learner: mlp), a feature group, a coarser level or segments"
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


# Where params.yaml declares views, in the order they train: each kind has its own DVC stages.
VIEW_SECTIONS = ("views", "cotrained", "transfers")


def _start_from(view: Any) -> str | None:
    return view.get("start_from") if isinstance(view, dict) else getattr(view, "start_from", None)
