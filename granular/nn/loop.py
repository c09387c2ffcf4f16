"""The training loop of one network, with the data resident on the device.

The loop takes optimiser steps and validates each epoch; what varies around it are hooks
(granular/nn/hooks.py: checkpoints, preemption, early stopping, the epoch records) and the
objective (granular/nn/objective.py: the loss, the validation scores). It pauses after every
step, so that a caller can interleave several trainings (co-training); `run_to_end` runs one alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Generator

import numpy as np
import torch
from torch import nn

from granular.config import TrainConfig
from granular.nn.device import Runtime
from granular.nn.inputs import NetworkInputs
from granular.nn.models import LevelHeads
from granular.nn.objective import Objective, Outputs, StepLoss
from granular.nn.predict import autocast, predict_proba
from granular.nn.trained import TrainedModel

if TYPE_CHECKING:
    from granular.nn.hooks import Hooks


@dataclass(frozen=True)
class TrainingData:
    """The examples of one training: the inputs and targets of its training and validation splits."""

    x_train: NetworkInputs
    y_train: np.ndarray
    x_val: NetworkInputs
    y_val: np.ndarray  # class ids (values for a regression) whatever the training targets are


@dataclass(frozen=True)
class Recipe:
    """How one network trains: the settings, where, its outputs (classes; 1 for a value), the
    weights it starts from (a state dict of the same network, heads may be left out) and the
    ancestor of each class at each extra head's level."""

    config: TrainConfig
    runtime: Runtime
    num_classes: int
    initial: dict[str, torch.Tensor] | None = None
    level_heads: LevelHeads = field(default_factory=dict)


@dataclass
class Run:
    """One training in progress: what the loop advances and the hooks read, save and restore."""

    data: TrainingData
    recipe: Recipe
    objective: Objective
    loss: StepLoss  # the objective's loss of a step, with the training targets on the device
    trained: TrainedModel  # the network in training, its input scaling, history and validation outputs
    forward: Callable[..., Outputs]  # a step's forward pass, compiled where the config says
    xs: tuple  # the training inputs on the device, or read from disk a batch at a time (NetworkInputs.resident)
    frozen: list[nn.Module]  # the modules of frozen parts
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # the order of examples and their augmentation
    loss_sum: torch.Tensor  # of the epoch's steps so far, on the device
    epoch: int = 1
    step: int = 0  # batches of `epoch` done
    order: torch.Tensor | None = None  # the epoch's order of examples; None until it begins
    # Early stopping's best epoch so far, with its weights and validation outputs; in every checkpoint.
    best: dict = field(default_factory=lambda: {"val_loss": math.inf, "epoch": 0, "weights": None, "val_proba": None})
    stopped: bool = False

    @property
    def model(self) -> nn.Module:
        return self.trained.model


def training_steps(run: Run, hooks: Hooks) -> Generator[None, None, TrainedModel]:
    """Train `run` to its last epoch, pausing after each optimiser step; return the trained
    network. The hooks act at fixed points: on_start (resume), on_epoch_start, after_step,
    after_turn (back from the pause), on_validation_end, on_epoch_end and on_end; hooks.running()
    holds around the epochs."""
    data, config, runtime = run.data, run.recipe.config, run.recipe.runtime
    hooks.on_start(run)
    with hooks.running():
        while run.epoch <= config.epochs and not run.stopped:
            run.model.train()
            for module in run.frozen:  # dropout off and BatchNorm statistics kept, as in prediction
                module.eval()
            if run.order is None:  # a new epoch, not one resumed halfway
                run.order = torch.randperm(len(data.x_train), generator=run.generator).to(runtime.device)
                run.loss_sum = torch.zeros((), device=runtime.device)
            hooks.on_epoch_start(run)
            for start in range(run.step * config.batch_size, len(data.x_train), config.batch_size):
                rows = run.order[start : start + config.batch_size]
                batch = data.x_train.augment(tuple(x[rows] for x in run.xs), config, run.generator)
                batch = data.x_train.scaled(batch, run.trained.mean, run.trained.std)
                with autocast(runtime):
                    loss = run.loss(rows, run.forward(*batch))
                run.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                run.optimizer.step()
                run.schedule.step()
                run.loss_sum += loss.detach() * len(rows)  # stays on the device: no sync per step
                run.step += 1
                hooks.after_step(run)
                yield  # another training's turn (co-training)
                hooks.after_turn(run)
            # Each epoch's check predicts without the shifted copies (a third of their cost).
            val_out = predict_proba(run.trained, data.x_val, runtime, batch_size=1024, shifted=False)
            record = {"epoch": run.epoch, "train_loss": float(run.loss_sum) / len(data.x_train),
                      **run.objective.scores(val_out, data.y_val)}
            hooks.on_validation_end(run, record, val_out)
            run.trained.history.append(record)
            run.trained.val_proba, run.order, run.step = val_out, None, 0
            hooks.on_epoch_end(run, record)
            run.epoch += 1
    hooks.on_end(run)
    # Resumed after the last epoch, or each epoch's check predicted without the shifted copies:
    if run.trained.val_proba is None or run.trained.tta_shift:
        run.trained.val_proba = predict_proba(run.trained, data.x_val, runtime, batch_size=1024)
    return run.trained


def run_to_end(steps: Generator[None, None, TrainedModel]) -> TrainedModel:
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value
