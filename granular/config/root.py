"""Config: every section of params.yaml in one validated object, and what the steps ask of it."""
from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from granular.config.cascade import DEFAULT_STAGES, FUSED, CascadeConfig, CascadeStage
from granular.config.rules import RULES
from granular.config.schema import (
    CleanConfig,
    CotrainPair,
    DataConfig,
    FusionConfig,
    ImportanceConfig,
    OrchestrationConfig,
    PromotionConfig,
    ServingConfig,
    SplitConfig,
    TrackingConfig,
    ValidateConfig,
    _Section,
)
from granular.config.training import DistillConfig, TrainConfig, TreesConfig, TuneConfig
from granular.config.views import VIEW_SECTIONS, ImageView, ViewConfig, _start_from


def _without_an_unfit_default_cascade(data: dict[str, Any], views: dict[str, Any]) -> dict[str, Any]:
    """The default cascade goes with the default views: where its stages are the default ones (left
    out, or as params.yaml ships them) and a view they run is missing, there is no cascade.
    Stages of the user's own that name a missing model are an error."""
    cascade = data.get("cascade") or {}
    if not isinstance(cascade, dict) or not _are_default_stages(cascade.get("stages", DEFAULT_STAGES)):
        return data
    if all(stage.model in {*views, FUSED} for stage in DEFAULT_STAGES):
        return data
    return {**data, "cascade": {**cascade, "stages": []}}


def _are_default_stages(stages: Any) -> bool:
    try:
        return [CascadeStage.model_validate(stage) for stage in stages] == DEFAULT_STAGES
    except (TypeError, ValidationError):  # not stages at all: the section's validation says why
        return False


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
        "fine-28": ImageView(
            level="fine", resolution=28, train={"epochs": 12, "stages": [{"level": "fine", "epochs": 14, "resolution": 14}]},
        ),
        "fine-28-tops-Dress": ImageView(
            level="fine", resolution=28, classes=["tops", "Dress"],
            train={"epochs": 20, "stages": [{"level": "fine", "epochs": 24, "resolution": 14}]},
        ),
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
    cascade: CascadeConfig = CascadeConfig()
    tune: TuneConfig = TuneConfig()
    tracking: TrackingConfig = TrackingConfig()
    promotion: PromotionConfig = PromotionConfig()
    serving: ServingConfig = ServingConfig()
    importance: ImportanceConfig = ImportanceConfig()
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
        data = _without_an_unfit_default_cascade(data, merged)
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
            if view.segments and view.global_name not in views and not view.global_is_the_baseline:
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
    def _rules_across_sections(self) -> "Config":
        for rule in RULES:
            rule(self)
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

    def as_dict(self) -> dict[str, Any]:
        """As params.yaml holds it: the co-trained views and the transfers under their own keys alone."""
        settings = self.model_dump(mode="json", by_alias=True)
        apart = {*self.cotrained, *self.transfers}
        settings["views"] = {name: view for name, view in settings["views"].items() if name not in apart}
        return settings
