"""Rules across sections: what one section allows depends on another (views against the source,
co-trained pairs, transfers, what a regression refuses). Config runs every rule of RULES, in
order, once its sections are valid each on its own."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from granular.config.cascade import FUSED, STUDENT
from granular.config.schema import REGRESSION_METRICS
from granular.config.views import TableView

if TYPE_CHECKING:
    from granular.config.root import Config


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


def specialists_beside_views_of_every_class(config: Config) -> None:
    if config.specialists and len(config.specialists) == len(config.views):
        raise ValueError(
            "views: every view is a specialist (classes:); the fusion needs one view that answers every class"
        )


def views_are_trainable(config: Config) -> None:
    for view in config.views.values():
        try:
            config.train_config(view)
        except ValidationError as error:
            first = error.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"view {view.name}: train.{key}: {first['msg']}") from None


def views_fit_the_source(config: Config) -> None:
    """Table views for a table, image views for images, each checked against the data."""
    modality = config.data.modality
    for view in config.views.values():
        if view.modality != modality:
            kind, needs = {
                "tables": ("a table (csv/parquet)", "features: all or a feature group"),
                "images": ("images", "a resolution"),
            }[modality]
            raise ValueError(f"view {view.name}: the source holds {kind}, so the view needs {needs}")
        view.check(config)
    if config.taxonomy is None and modality == "images":
        raise ValueError("taxonomy: images need a taxonomy file (only a table can derive one from its columns)")
    if modality == "tables" and config.distill.enabled:
        raise ValueError("distill.enabled: the student network is for images; set it to false for a table")


def pairs_of_cotrained_views(config: Config) -> None:
    """Each pair is two views of `cotrained` that learn the same level, each view in one
    pair; each trains in one stage (no `train.stages`, no extra heads), one network (not
    segmented)."""
    paired: dict[str, str] = {}
    for key, pair in config.cotrain.items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
            raise ValueError(f"cotrain.{key}: use letters, digits, '_', '.' and '-' only")
        for side in ("first", "second"):
            name = getattr(pair, side)
            if name not in config.cotrained:
                raise ValueError(f"cotrain.{key}.{side}: {name!r} is not a view of `cotrained:` {list(config.cotrained)}")
            if name in paired:
                raise ValueError(f"cotrain.{key}.{side}: view {name} is co-trained in pair {paired[name]} already")
            paired[name] = key
            view, train = config.views[name], config.train_config(config.views[name])
            if not view.trains_networks:
                raise ValueError(f"cotrained.{name}: a co-trained view trains a network, not {view.learner} trees")
            if view.segments or view.classes or train.stages or train.heads:
                raise ValueError(
                    f"cotrained.{name}: a co-trained view is one network trained in one stage on every "
                    "example (no segments, classes, train.stages or train.heads)"
                )
        if config.views[pair.first].level != config.views[pair.second].level:
            raise ValueError(f"cotrain.{key}: {pair.first} and {pair.second} must learn the same level")
    unpaired = [name for name in config.cotrained if name not in paired]
    if unpaired:
        raise ValueError(f"cotrained: {', '.join(unpaired)} in no pair of `cotrain:`, so never trained")


def transfers_fit_their_sources(config: Config) -> None:
    """Each transfer starts from a view declared before it (so none starts from itself, in a
    loop or from a view trained after it) whose network has the same shape: one network,
    the same width and depth (and, for a table, the same features)."""
    names = list(config.views)
    for name in config.transfers:
        view = config.views[name]
        key, source = f"transfers.{name}.start_from", view.start_from
        if source not in config.views or names.index(source) >= names.index(name):
            raise ValueError(f"{key}: {source!r} is not a view declared before it (views first, then transfers in order)")
        origin = config.views[source]
        for end in (view, origin):
            if not end.trains_networks:
                raise ValueError(f"{key}: view {end.name} learns {end.learner} trees: a transfer hands over a network")
        if origin.segments:
            raise ValueError(f"{key}: view {source} trains one expert per segment; start from a view of one network")
        if isinstance(view, TableView) and view.features != origin.features:
            raise ValueError(f"{key}: view {source} reads the features {origin.features!r}, this one {view.features!r}")
        mine, theirs = config.train_config(view), config.train_config(origin)
        for setting in ("width", "depth"):
            if getattr(mine, setting) != getattr(theirs, setting):
                raise ValueError(
                    f"{key}: train.{setting} is {getattr(mine, setting)} here but {getattr(theirs, setting)} "
                    f"in view {source}: the network must have the same shape"
                )


def regression_settings(config: Config) -> None:
    """A regression target's views learn the number (level fine) or a level of its bins;
    what only a classifier has (class weights, a decision threshold, back-off, hierarchy and
    class metrics, the class-probability fusions) is refused, as are the network hand-overs
    (transfers, co-training, staged and multi-head training) a regression network lacks."""
    table = config.data.table
    if table is None or table.task != "regression":
        return
    levels = ["fine", *table.bins]
    for view in config.views.values():
        if view.level not in levels:
            raise ValueError(f"view {view.name}: level {view.level!r} is not fine (the target) or a level of data.table.bins {levels[1:]}")
        if view.trains_networks and (config.train_config(view).stages or config.train_config(view).heads):
            raise ValueError(f"view {view.name}: train.stages and train.heads are for classes; a regression view trains in one stage")
        if view.classes is not None:
            raise ValueError(f"view {view.name}: classes: a specialist learns some of the classes; a regression target has none")
    refused = {
        "taxonomy": config.taxonomy is not None and "a regression target's levels are its bins (data.table.bins)",
        "transfers": bool(config.transfers) and "a transfer hands over a classifier",
        "cotrained": bool(config.cotrained) and "co-training pulls class probabilities together",
        "train.class_weight": config.train.class_weight is not None and "class weights are for classes",
        "trees.class_weight": config.trees.class_weight is not None and "class weights are for classes",
        "fusion.threshold_metric": config.fusion.threshold_metric is not None and "a threshold decides between two classes",
        "fusion.strategy": config.fusion.strategy not in ("auto", "stacking", "best_view")
        and "a regression's views are fused by stacking or best_view",
        "serving.backoff_threshold": config.serving.backoff_threshold is not None and "back-off is between class levels",
        "promotion.metric": config.promotion.metric not in (None, *REGRESSION_METRICS)
        and f"a regression is gated on {', '.join(REGRESSION_METRICS)}",
        "promotion.min_metrics": any(m not in REGRESSION_METRICS for m in config.promotion.min_metrics)
        and f"a regression's floors are on {', '.join(REGRESSION_METRICS)}",
        "promotion.max_mistake_severity": config.promotion.max_mistake_severity is not None and "it is a class hierarchy's",
        "promotion.min_hierarchical_f1": config.promotion.min_hierarchical_f1 is not None and "it is a class hierarchy's",
        "promotion.min_level_accuracy": bool(config.promotion.min_level_accuracy) and "it is a class hierarchy's",
    }
    for key, why in refused.items():
        if why:
            raise ValueError(f"{key}: not for a regression target (data.table.task: regression): {why}")


def cascade_stages_exist(config: Config) -> None:
    """Each stage before the fused model is a view of every class, or the student; a
    resolution is for images; a regression has no confidence to pass an example on by."""
    stages = config.cascade.stages
    if not stages:
        return
    table = config.data.table
    if table is not None and table.task == "regression":
        raise ValueError(
            "cascade.stages: a cascade passes on the examples a model is unsure of; a regression target's "
            "values have no such confidence: set cascade.stages: []"
        )
    if config.fusion.threshold_metric:
        raise ValueError(
            "cascade.stages: each stage answers its most probable class, while fusion.threshold_metric decides "
            "two classes by a fitted cut: set cascade.stages: [] or leave fusion.threshold_metric null"
        )
    for number, stage in enumerate(stages[:-1]):
        where = f"cascade.stages.{number}"
        if stage.model == STUDENT:
            if not config.distill.enabled:
                raise ValueError(f"{where}: the student is a stage, but distill.enabled is false")
        elif stage.model not in config.views:
            raise ValueError(
                f"{where}: no model named {stage.model!r}; a stage is one of the views {list(config.views)}, "
                f"{STUDENT!r} or {FUSED!r}"
            )
        elif config.views[stage.model].classes is not None:
            raise ValueError(
                f"{where}: view {stage.model} learns some of the classes (classes:); a stage answers every class"
            )
        if stage.resolution is not None and config.data.modality != "images":
            raise ValueError(f"{where}.resolution: for images; this source is a table")


def one_way_to_decide(config: Config) -> None:
    if config.fusion.threshold_metric and config.serving.backoff_threshold is not None:
        raise ValueError(
            "fusion.threshold_metric decides between two classes, serving.backoff_threshold backs off to coarser "
            "levels: set one of them"
        )


def relative_paths_stay_in_project(config: Config) -> None:
    """Refused at once: a relative path whose `..` climbs out of the project root. Absolute
    paths and symlinks need the root, so ProjectPaths.resolve checks them where they are used."""
    for key, path in config_paths(config).items():
        if not path.is_absolute() and Path(os.path.normpath(path)).parts[:1] == ("..",):
            raise ValueError(f"{key}: {path} leaves the project root; configured paths must stay inside it")


RULES = (
    specialists_beside_views_of_every_class,
    views_are_trainable,
    views_fit_the_source,
    pairs_of_cotrained_views,
    transfers_fit_their_sources,
    regression_settings,
    cascade_stages_exist,
    one_way_to_decide,
    relative_paths_stay_in_project,
)
