"""Co-training (deep mutual learning): networks that read the same examples, each through its
own inputs (a low- and a high-resolution view, say), train step by step side by side, and each
step's loss also pulls a network's predictions toward the others' on the same examples:
`weight` times the KL divergence from the partner's probabilities (a fixed target, from the
partner in prediction mode, on its own un-augmented inputs of the batch's rows) to its own.

Each network keeps its own seed, order of examples, augmentation, optimiser and schedule; the
random stream of each (dropout) is kept apart, so with `weight` 0 every network ends exactly as
its training alone (`train.fit`) would.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from granular.config import TrainConfig
from granular.nn import hooks, train
from granular.nn.device import Runtime
from granular.nn.inputs import NetworkInputs
from granular.nn.loop import Recipe, Run, TrainingData, training_steps
from granular.nn.objective import Classes, ExtraTerm
from granular.nn.predict import autocast
from granular.nn.trained import TrainedModel
from granular.runtime import preemption


@dataclass
class Member:
    """One network of a co-training: its data, recipe and where its records go."""

    x_train: NetworkInputs
    y_train: np.ndarray
    x_val: NetworkInputs
    y_val: np.ndarray
    num_classes: int
    config: TrainConfig
    on_epoch: hooks.EpochCallback | None = None
    checkpoint_dir: Path | None = None
    class_weights: np.ndarray | None = None  # of the classes, in the training loss


def _partner_probabilities(partner: Run, rows: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """The partner's probabilities of the examples `rows`, predicted as in serving (dropout off,
    BatchNorm's running statistics) from its un-augmented inputs, without a gradient."""
    trained = partner.trained
    modes = {module: module.training for module in trained.model.modules()}
    trained.model.eval()
    try:
        with torch.no_grad(), autocast(runtime):
            inputs = partner.data.x_train.scaled(tuple(t[rows] for t in partner.xs), trained.mean, trained.std)
            return F.softmax(trained.model(*inputs).float(), dim=1)
    finally:
        for module, training in modes.items():
            module.train(training)


def _pull_toward(runs: list[Run], number: int, weight: float, runtime: Runtime) -> ExtraTerm:
    """The consistency term of training `number`: toward the other runs, which all exist by its first step."""
    def consistency(rows: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        log_proba = F.log_softmax(logits.float(), dim=1)
        divergences = [
            F.kl_div(log_proba, _partner_probabilities(partner, rows, runtime), reduction="batchmean")
            for other, partner in enumerate(runs) if other != number
        ]
        return weight * sum(divergences) / len(divergences)

    return consistency


def fit_together(members: list[Member], weight: float, runtime: Runtime, warn=print) -> list[TrainedModel]:
    """Train `members` side by side, one step of each in turn; return their trained networks."""
    if len(members) < 2:
        raise ValueError("co-training needs two networks or more")
    if weight < 0:
        raise ValueError(f"the consistency weight must be 0 or more, got {weight}")
    sizes = {len(member.x_train) for member in members}
    if len(sizes) > 1:
        raise ValueError(f"co-trained networks must read the same training examples; their counts are {sorted(sizes)}")
    runs: list[Run] = []
    streams, steps = [], []
    for number, member in enumerate(members):
        extra = _pull_toward(runs, number, weight, runtime) if weight else None
        runs.append(train.start(
            TrainingData(member.x_train, member.y_train, member.x_val, member.y_val),
            Recipe(member.config, runtime, member.num_classes), Classes(member.class_weights, extra),
        ))
        # Each training draws from its own random stream, as if it ran alone.
        streams.append(_random_state())
        steps.append(training_steps(runs[-1], hooks.for_training(
            member.config, member.on_epoch, member.checkpoint_dir, warn, defer_signals=False,
        )))
    trained: list[TrainedModel | None] = [None] * len(members)
    with preemption.deferred_stop_signals():
        while any(result is None for result in trained):
            for number, stepping in enumerate(steps):
                if trained[number] is not None:
                    continue
                _set_random_state(streams[number])
                try:
                    next(stepping)
                except StopIteration as end:
                    trained[number] = end.value
                streams[number] = _random_state()
    return trained


def _random_state() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda


def _set_random_state(state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
