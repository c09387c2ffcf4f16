"""What a network learns, apart from the loop that trains it: its targets on the device, the loss
of a step, an epoch's validation scores and how the network's outputs become predictions.

One class per kind of target, one shape: `Classes` (class ids or probabilities, by cross-entropy)
and `Values` (numbers, by squared error). The loop and prediction ask the objective what to do
and never which kind it is. Either takes an `extra` term of each step's loss: a co-trained
partner's pull (granular/nn/cotrain.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np
import torch
from torch.nn import functional as F

from granular.core.evaluate import log_loss

if TYPE_CHECKING:
    from granular.nn.loop import Recipe
    from granular.nn.trained import TrainedModel

# A further term of a step's loss: (the batch's training rows, the network's logits) -> loss.
ExtraTerm = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# What a training step's forward gives: the network's own head's logits (B, outputs) and each
# extra head's (B, classes of its level), by level.
Outputs = tuple[torch.Tensor, dict[str, torch.Tensor]]


class StepLoss(Protocol):
    """An objective's loss of a step, holding the training targets on the device."""

    target_scale: tuple[float, float] | None  # what the trained network keeps: see TrainedModel

    def __call__(self, rows: torch.Tensor, outputs: Outputs) -> torch.Tensor: ...


class Objective(Protocol):
    def step_loss(self, y_train: np.ndarray, recipe: Recipe) -> StepLoss:
        """Check the training targets against the recipe and put them on its device."""

    def fingerprint_arrays(self) -> list[np.ndarray]:
        """What of the objective makes two trainings different ones (a checkpoint's fingerprint)."""

    def scores(self, val_out: np.ndarray, y_val: np.ndarray) -> dict[str, float]:
        """An epoch's validation scores, val_loss among them (early stopping's)."""

    def activation(self, outputs: torch.Tensor) -> torch.Tensor:
        """A prediction of one input copy from the network's outputs (B, outputs)."""

    def predictions(self, outputs: torch.Tensor, target_scale: tuple[float, float] | None) -> np.ndarray:
        """The predictions of all inputs from the mean of their copies' activations."""


def _with_extra(loss: torch.Tensor, extra: ExtraTerm | None, rows: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return loss if extra is None else loss + extra(rows, logits)


@dataclass(frozen=True)
class Classes:
    """Classes, by cross-entropy with the config's label smoothing, from class ids (N,) or from
    target probabilities (N, classes), which cross-entropy takes as they are (a teacher's soft
    targets, for distillation). `class_weights` (classes,) weigh each class's examples in the
    training loss and in the validation loss that chooses the epoch kept. Each extra head
    (granular/nn/stages.py: level_heads_for) learns the classes' ancestors at its level, its
    loss weighted as train.heads says. Predictions are probabilities (N, classes)."""

    class_weights: np.ndarray | None = None
    extra: ExtraTerm | None = None

    def step_loss(self, y_train: np.ndarray, recipe: Recipe) -> ClassLoss:
        num_classes, device = recipe.num_classes, recipe.runtime.device
        targets = _class_targets(np.asarray(y_train), num_classes, device)
        if recipe.level_heads and targets.ndim != 1:
            raise ValueError("extra heads learn from class ids, not from soft targets")
        weight = None
        if self.class_weights is not None:
            if np.shape(self.class_weights) != (num_classes,):
                raise ValueError(f"class_weights: one weight per class ({num_classes}) is needed, "
                                 f"got shape {np.shape(self.class_weights)}")
            weight = torch.as_tensor(self.class_weights, dtype=torch.float32, device=device)
        ancestors = {level: torch.tensor(ids, device=device) for level, ids in recipe.level_heads.items()}
        config = recipe.config
        return ClassLoss(targets, weight, config.label_smoothing, dict(config.heads), ancestors, self.extra)

    def fingerprint_arrays(self) -> list[np.ndarray]:
        return [] if self.class_weights is None else [np.asarray(self.class_weights, dtype=np.float64)]

    def scores(self, val_out: np.ndarray, y_val: np.ndarray) -> dict[str, float]:
        if not len(y_val):
            return {"val_accuracy": float("nan"), "val_loss": float("nan")}
        return {"val_accuracy": float((val_out.argmax(1) == y_val).mean()), "val_loss": self._val_loss(val_out, y_val)}

    def _val_loss(self, val_out: np.ndarray, y_val: np.ndarray) -> float:
        """The log-loss the training minimises: with class weights, each example's weighed by its
        class's, normalised as cross-entropy's (so the epoch kept is the best at what the weighted
        training aims for; by the plain log-loss, the epoch that answers the common class best)."""
        if self.class_weights is None or np.ndim(y_val) != 1:
            return log_loss(val_out, y_val)
        weights = np.asarray(self.class_weights, dtype=np.float64)[y_val]
        picked = np.log(np.clip(val_out[np.arange(len(y_val)), y_val], 1e-12, None))
        return float(-(weights * picked).sum() / weights.sum())

    def activation(self, outputs: torch.Tensor) -> torch.Tensor:
        return F.softmax(outputs, dim=1)

    def predictions(self, outputs: torch.Tensor, target_scale: None) -> np.ndarray:
        return outputs.numpy()


def _class_targets(y_train: np.ndarray, num_classes: int, device: torch.device) -> torch.Tensor:
    """Class ids (N,) or probabilities (N, classes) on the device."""
    if y_train.ndim == 1:
        return torch.as_tensor(y_train, dtype=torch.long, device=device)
    if y_train.ndim != 2 or y_train.shape[1] != num_classes:
        raise ValueError(f"soft targets must have shape (N, {num_classes}), got {y_train.shape}")
    if not np.allclose(y_train.sum(axis=1), 1.0, atol=1e-3) or (y_train < 0).any():
        raise ValueError("soft targets must be probabilities: non-negative rows that sum to 1")
    return torch.as_tensor(y_train, dtype=torch.float32, device=device)


@dataclass(frozen=True)
class ClassLoss:
    targets: torch.Tensor  # class ids (N,) or probabilities (N, classes)
    weight: torch.Tensor | None  # of each class
    smoothing: float
    heads: dict[str, float]  # extra head's level -> its loss weight
    ancestors: dict[str, torch.Tensor]  # extra head's level -> each class's ancestor there
    extra: ExtraTerm | None
    target_scale: None = None

    def __call__(self, rows: torch.Tensor, outputs: Outputs) -> torch.Tensor:
        logits, by_level = outputs
        targets = self.targets[rows]
        if self.weight is not None and targets.ndim == 1:
            # Each example weighed by its class's weight. Not cross_entropy's `weight`: with label
            # smoothing, that weighs the smoothed share of every class too, so a rare class's
            # large weight pulls every example towards it (a balanced network then answered the
            # rare class for every row).
            weights = self.weight[targets]
            each = F.cross_entropy(logits, targets, reduction="none", label_smoothing=self.smoothing)
            loss = (each * weights).sum() / weights.sum()
        else:
            loss = F.cross_entropy(logits, targets, weight=self.weight, label_smoothing=self.smoothing)
        for level, level_logits in by_level.items():  # the heads' order: a float sum's order shows in its bits
            ancestor = self.ancestors[level][targets]
            loss = loss + self.heads[level] * F.cross_entropy(level_logits, ancestor, label_smoothing=self.smoothing)
        return _with_extra(loss, self.extra, rows, logits)


@dataclass(frozen=True)
class Values:
    """Numbers, one per example, learned by the network's one output as the squared error of the
    standardised value (by the training targets' mean and deviation, its target_scale). Its
    validation loss is the mean squared error in the target's units, val_rmse the root of it;
    predictions are values (N, 1) in the target's units."""

    extra: ExtraTerm | None = None

    def step_loss(self, y_train: np.ndarray, recipe: Recipe) -> ValueLoss:
        y = np.asarray(y_train, dtype=np.float64)
        if recipe.num_classes != 1 or y.ndim != 1 or recipe.level_heads:
            raise ValueError("a regression network has one output, one number per example and no extra heads")
        if not np.isfinite(y).all():
            raise ValueError("regression targets must be finite numbers")
        mean, std = float(y.mean()), float(y.std()) or 1.0  # 1 for a constant target
        targets = torch.as_tensor((y - mean) / std, dtype=torch.float32, device=recipe.runtime.device)
        return ValueLoss(targets, (mean, std), self.extra)

    def fingerprint_arrays(self) -> list[np.ndarray]:
        return []

    def scores(self, val_out: np.ndarray, y_val: np.ndarray) -> dict[str, float]:
        if not len(y_val):
            return {"val_rmse": float("nan"), "val_loss": float("nan")}
        mse = float(np.mean((val_out[:, 0] - y_val) ** 2))
        return {"val_rmse": math.sqrt(mse), "val_loss": mse}

    def activation(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs

    def predictions(self, outputs: torch.Tensor, target_scale: tuple[float, float]) -> np.ndarray:
        mean, std = target_scale  # standardised values back in the target's units
        return outputs.double().numpy() * std + mean


@dataclass(frozen=True)
class ValueLoss:
    targets: torch.Tensor  # standardised values (N,)
    target_scale: tuple[float, float]  # the training targets' mean and deviation
    extra: ExtraTerm | None

    def __call__(self, rows: torch.Tensor, outputs: Outputs) -> torch.Tensor:
        logits, _ = outputs  # (B, 1); no extra heads
        return _with_extra(F.mse_loss(logits[:, 0].float(), self.targets[rows]), self.extra, rows, logits)


def of_trained(trained: TrainedModel) -> Classes | Values:
    """The objective a trained network learned, which says how its outputs become predictions:
    a network that keeps its targets' scale learned values."""
    return Classes() if trained.target_scale is None else Values()
