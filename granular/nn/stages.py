"""One network trained in stages over granularities: each stage of `train.stages` learns one
taxonomy level (coarse before fine, say), on images at a lower resolution where it names one
(progressive resizing: a 14x14 stage costs about a third of a 28x28 one), then the view's own
stage learns the view's level at the view's resolution; each stage starts from the previous
one's feature extractor (its head too when both predict the same level), so the cheap stages
shape the features the last one refines. Each stage is a `train.fit` with its own schedule,
per-part settings and checkpoints: a killed run resumes inside the stage it was in, the
finished stages read back from theirs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from granular.config import TrainConfig
from granular.core.class_weights import class_weights
from granular.core.partition import pool
from granular.core.taxonomy import Taxonomy
from granular.nn import train
from granular.nn.hooks import EpochCallback
from granular.nn.device import Runtime
from granular.nn.inputs import NetworkInputs, Pixels
from granular.nn.models import LevelHeads
from granular.nn.objective import Classes
from granular.nn.trained import TrainedModel


def relabel(labels: np.ndarray, taxonomy: Taxonomy, level: str, to_level: str) -> np.ndarray:
    """Class ids at `level` -> their ancestors' ids at `to_level` (the same or a coarser level)."""
    ancestor = np.full(taxonomy.num_classes(level), -1)
    for own, coarser in zip(taxonomy.parent[level], taxonomy.parent[to_level]):
        if ancestor[own] not in (-1, coarser):
            names = taxonomy.names[to_level]
            raise ValueError(
                f"level {to_level!r} is not coarser than {level!r}: class {taxonomy.names[level][own]!r} "
                f"falls under both {names[ancestor[own]]!r} and {names[coarser]!r}"
            )
        ancestor[own] = coarser
    return ancestor[np.asarray(labels)]


def at_resolution(inputs: NetworkInputs, resolution: int | None) -> NetworkInputs:
    """The inputs of a stage: the view's own, or its images average-pooled to `resolution`."""
    if resolution is None:
        return inputs
    if not isinstance(inputs, Pixels):
        raise ValueError(f"a stage's resolution ({resolution}) applies to images only")
    return Pixels(pool(inputs.images, resolution))


def _ancestors(taxonomy: Taxonomy, level: str, to_level: str, key: str) -> list[int]:
    """The id at `to_level` of each class of `level`; an error names `key` when it is not coarser."""
    if to_level not in taxonomy.levels:
        raise ValueError(f"{key} {to_level!r} is not a taxonomy level {list(taxonomy.levels)}")
    try:
        return relabel(np.arange(taxonomy.num_classes(level)), taxonomy, level, to_level).tolist()
    except ValueError as error:
        raise ValueError(f"{key}: {error}") from None


def check_stages(config: TrainConfig, taxonomy: Taxonomy, level: str) -> None:
    """Fail before any training when a stage's level is unknown or finer than the view's, or an
    extra head's is not strictly coarser."""
    for number, stage in enumerate(config.stages):
        _ancestors(taxonomy, level, stage.level, f"train.stages[{number}].level")
    level_heads_for(config, taxonomy, level)


def level_heads_for(config: TrainConfig, taxonomy: Taxonomy, level: str) -> LevelHeads:
    """The extra heads of a network that learns `level`: each level of `config.heads`, which must
    be strictly coarser than the view's, -> the ancestor of each class of `level` there."""
    heads = {}
    for head_level in config.heads:
        if head_level == level:
            raise ValueError(f"train.heads.{head_level}: the network's own head learns {level!r} already")
        heads[head_level] = _ancestors(taxonomy, level, head_level, "train.heads")
    return heads


def handed_over(
    weights: dict[str, torch.Tensor] | None, from_level: str | None, to_level: str
) -> dict[str, torch.Tensor] | None:
    """What a network that learned `from_level` hands to one that learns `to_level`: its
    feature extractor, and its head too when the classes are the same."""
    if weights is None or from_level == to_level:
        return weights
    return {key: value for key, value in weights.items() if not key.startswith("head.")}


def fit_staged(
    x_train: NetworkInputs,
    y_train: np.ndarray,
    x_val: NetworkInputs,
    y_val: np.ndarray,
    taxonomy: Taxonomy,
    level: str,
    config: TrainConfig,
    runtime: Runtime,
    on_epoch: EpochCallback | None = None,
    checkpoint_dir: Path | None = None,
    warn: Callable[[str], None] = print,
    initial: dict[str, torch.Tensor] | None = None,
    initial_level: str | None = None,
) -> TrainedModel:
    """Train `config.stages`, then the view's own stage on the labels `y_*` of `level`; return
    the last stage's network. Each epoch's record carries its stage number and level (and its
    resolution, for a stage that has one), and counts epochs across the stages. With no stages
    this is `train.fit` exactly. The first stage starts from the weights `initial` where given
    (another view's network, which learned `initial_level`), as a stage from the one before."""
    check_stages(config, taxonomy, level)
    if not config.stages:
        return train.fit(
            x_train, y_train, x_val, y_val, taxonomy.num_classes(level), config, runtime, on_epoch, checkpoint_dir,
            warn, initial=handed_over(initial, initial_level, level), level_heads=level_heads_for(config, taxonomy, level),
            objective=Classes(class_weights(config.class_weight, y_train, taxonomy, level)),
        )
    own = config.model_copy(update={"stages": []})
    # An earlier stage's predictions are only checked, never served: no shifted test-time copies.
    plan = [
        (stage.level, stage.resolution,
         own.model_copy(update={"epochs": stage.epochs, "parts": stage.parts, "tta_shift": 0}))
        for stage in config.stages
    ]
    plan.append((level, None, own))
    weights, previous_level, epochs_before = initial, initial_level, 0
    for number, (stage_level, resolution, stage_config) in enumerate(plan):
        tags = {"stage": number, "stage_level": stage_level}
        if resolution is not None:
            tags["stage_resolution"] = resolution

        def record_stage(record: dict, tags=tags, offset=epochs_before) -> None:
            if on_epoch is not None:
                on_epoch({**record, "epoch": offset + record["epoch"], **tags})

        weights = handed_over(weights, previous_level, stage_level)
        y_stage, y_val_stage = (relabel(labels, taxonomy, level, stage_level) for labels in (y_train, y_val))
        # A stage has the extra heads of levels coarser than its own (a coarse stage none of its level).
        heads = {head: weight for head, weight in stage_config.heads.items()
                 if taxonomy.levels.index(head) > taxonomy.levels.index(stage_level)}  # levels: finest first
        stage_config = stage_config.model_copy(update={"heads": heads})
        network = train.fit(
            at_resolution(x_train, resolution), y_stage, at_resolution(x_val, resolution), y_val_stage,
            taxonomy.num_classes(stage_level), stage_config, runtime, record_stage,
            checkpoint_dir / f"stage-{number}" if checkpoint_dir else None, warn, initial=weights,
            level_heads=level_heads_for(stage_config, taxonomy, stage_level),
            objective=Classes(class_weights(config.class_weight, y_stage, taxonomy, stage_level)),
        )
        weights = {key: value.detach().clone() for key, value in network.model.state_dict().items()}
        previous_level, epochs_before = stage_level, epochs_before + stage_config.epochs
    return network
