"""One network's training: how it starts (seeded, its targets and inputs on the device, the
network, its optimiser and schedule) and `fit`, which runs the loop (granular/nn/loop.py) with
its hooks to the end.

One loop serves every kind of input (granular/nn/inputs.py): the inputs say which network reads
them, how they are scaled (by statistics of the training split) and how a batch is augmented;
and every kind of target (granular/nn/objective.py). Inference is granular/nn/predict.py's.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from granular.config import PartConfig, TrainConfig
from granular.nn import models
from granular.nn.device import Runtime
from granular.nn.hooks import EpochCallback, for_training
from granular.nn.inputs import NetworkInputs
from granular.nn.loop import Recipe, Run, TrainingData, run_to_end, training_steps
from granular.nn.objective import Classes, Objective, Outputs
from granular.nn.trained import TrainedModel


def _frozen_modules(model: nn.Module, config: TrainConfig) -> list[nn.Module]:
    parts = models.network_parts(model)
    return [module for part, setting in config.parts.items() if setting.frozen for module in parts[part]]


def _parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """One optimiser group per part that trains, with its own learning rate and weight decay;
    a frozen part's parameters stop asking for gradients."""
    groups = []
    for part, modules in models.network_parts(model).items():
        setting = config.parts.get(part, PartConfig())
        params = [p for module in modules for p in module.parameters()]
        if setting.frozen:
            for p in params:
                p.requires_grad_(False)
            continue
        weight_decay = config.weight_decay if setting.weight_decay is None else setting.weight_decay
        groups.append({"params": params, "lr": config.lr * setting.lr_scale, "weight_decay": weight_decay})
    return groups


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = _parameter_groups(model, config)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)


def _schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    """Warm-up to the peak learning rate over warmup_fraction of the steps, then down to ~0."""
    # OneCycleLR divides by zero when its warm-up is shorter than a step: tiny runs (a small
    # segment's expert) get a schedule of at least 5 steps, not all of which they take.
    total_steps = max(total_steps, 5)
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total_steps,
            pct_start=config.warmup_fraction,
        )
    warmup = max(1, round(config.warmup_fraction * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(_warmup_cosine, warmup, total_steps))


def _warmup_cosine(warmup: int, total: int, step: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _load_initial(model: nn.Module, initial: dict[str, torch.Tensor]) -> None:
    """Start from `initial`; heads it lacks start afresh, extra heads the network lacks are dropped."""
    missing, unexpected = model.load_state_dict(initial, strict=False)
    not_head = [key for key in missing if not key.startswith(("head.", "level_heads."))]
    unexpected = [key for key in unexpected if not key.startswith("level_heads.")]
    if not_head or unexpected:
        raise ValueError(f"initial weights do not fit the network: missing {not_head}, unexpected {unexpected}")


def _forward(model: nn.Module, recipe: Recipe) -> Callable[..., Outputs]:
    """A step's forward pass: every head's logits with extra heads (a prediction reads their
    product), else the network's with no extra ones; compiled where the config says. The compiled
    module shares the model's parameters; checkpoints keep the plain model's names."""
    config, heads = recipe.config, bool(recipe.level_heads)
    forward = model.logits_by_head if heads else model
    if config.compile == "on" or (config.compile == "auto" and recipe.runtime.device.type == "cuda"):
        forward = torch.compile(forward)
    return forward if heads else functools.partial(_without_extra_heads, forward)


def _without_extra_heads(forward: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> Outputs:
    return forward(*inputs), {}


def start(data: TrainingData, recipe: Recipe, objective: Objective) -> Run:
    """A training before its first step: seeded, its inputs and targets on the device, the
    network (from `recipe.initial` where given), its optimiser and schedule."""
    config, device = recipe.config, recipe.runtime.device
    if len(data.x_train) == 0:
        raise ValueError("cannot train on an empty training split")
    if len(data.y_train) != len(data.x_train):
        raise ValueError(f"{len(data.x_train)} training inputs but {len(data.y_train)} targets")
    if set(config.heads) != set(recipe.level_heads):
        given = sorted(recipe.level_heads)
        raise ValueError(f"train.heads {sorted(config.heads)} need each level's ancestors; given {given}")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    mean, std = data.x_train.statistics(device)
    xs = data.x_train.resident(device)
    loss = objective.step_loss(data.y_train, recipe)
    model = data.x_train.network(recipe.num_classes, config, recipe.level_heads)
    if recipe.initial is not None:
        _load_initial(model, recipe.initial)
    model = model.to(device, memory_format=torch.channels_last)
    forward = _forward(model, recipe)
    optimizer = _optimizer(model, config)
    frozen = _frozen_modules(model, config)
    schedule = _schedule(optimizer, config, config.epochs * math.ceil(len(data.x_train) / config.batch_size))
    trained = TrainedModel(
        model=model, mean=mean, std=std, tta=config.tta and data.x_train.spatial_tta,
        tta_shift=config.tta_shift if data.x_train.spatial_tta else 0, target_scale=loss.target_scale,
    )
    return Run(data, recipe, objective, loss, trained, forward, xs, frozen, optimizer, schedule, generator,
               torch.zeros((), device=device))


def fit(
    x_train: NetworkInputs,
    y_train: np.ndarray,
    x_val: NetworkInputs,
    y_val: np.ndarray,
    num_classes: int,
    config: TrainConfig,
    runtime: Runtime,
    on_epoch: EpochCallback | None = None,
    checkpoint_dir: Path | None = None,
    warn: Callable[[str], None] = print,
    initial: dict[str, torch.Tensor] | None = None,
    level_heads: models.LevelHeads | None = None,
    objective: Objective | None = None,
) -> TrainedModel:
    """Train the network that reads `x_train` with the recipe in `config` (optimizer and its
    per-part settings, warm-up schedule, label smoothing, the inputs' augmentation, early
    stopping on the validation loss), from the weights in `initial` where given (a state dict
    of the same network; the head's may be left out, to start it afresh).

    `objective` says what the network learns (granular/nn/objective.py): by default `Classes()`,
    class ids (N,) or target probabilities (N, num_classes) in `y_train`, optionally with class
    weights; `Values()` numbers (num_classes 1), predicted as values (N, 1). Validation always
    uses `y_val` (class ids, or the values).

    `level_heads` gives each level of `config.heads` the ancestor of every class: an extra head
    learns those ancestors, its loss weighted as `config.heads` says (granular/nn/stages.py:
    level_heads_for).

    With a checkpoint_dir, the whole training state (weights, optimizer, schedule, random
    generators, history, best weights so far) is saved after every epoch and on SIGTERM, and a
    later call with the same settings and data resumes from the newest readable checkpoint: on
    the CPU it ends with exactly the weights an uninterrupted run would have.
    """
    run = start(
        TrainingData(x_train, y_train, x_val, y_val), Recipe(config, runtime, num_classes, initial, level_heads or {}),
        Classes() if objective is None else objective,
    )
    return run_to_end(training_steps(run, for_training(config, on_epoch, checkpoint_dir, warn)))
