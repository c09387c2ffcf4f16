"""Knowledge distillation: one student network that learns the fused ensemble's predictions.

The fused model runs every view (and a segmented view's experts) for each image; the student is
one ResidualCNN at full resolution, trained on targets that mix the ensemble's probabilities on
the training images (softened or sharpened by a temperature) with the true labels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from granular.config import DistillConfig, TrainConfig
from granular.nn.device import Runtime
from granular.nn.hooks import EpochCallback
from granular.nn.train import fit
from granular.nn.trained import TrainedModel


def soften(proba: np.ndarray, temperature: float) -> np.ndarray:
    """p^(1/T), renormalised per row: the softmax of the logits divided by T. T > 1 softens,
    T < 1 sharpens, T = 1 leaves the probabilities as they are."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logs = np.log(np.clip(proba, 1e-12, None)) / temperature
    logs -= logs.max(axis=1, keepdims=True)  # exp of at most 0: no overflow
    exp = np.exp(logs)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def teacher_targets(classifier, images: np.ndarray, batch_size: int = 4096, temperature: float = 1.0) -> np.ndarray:
    """The fused ensemble's fine probabilities on (N, H, W) images (pixels 0..255), computed a
    batch at a time (bounded memory), softened by `temperature`. `classifier` is any object
    with `predict_proba(images, shifted)`, such as granular.serving.predict.FusedClassifier; the
    pass skips the shifted test-time copies: on the training images they cost 3x and change the
    targets little."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batches = [
        classifier.predict_proba(images[start : start + batch_size], shifted=False)
        for start in range(0, len(images), batch_size)
    ]
    if not batches:
        raise ValueError("no images to compute teacher targets on")
    return soften(np.concatenate(batches), temperature)


def mixed_targets(teacher_proba: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * the teacher's probabilities + (1 - alpha) * the one-hot true labels."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if len(teacher_proba) != len(labels):
        raise ValueError(f"{len(teacher_proba)} teacher predictions but {len(labels)} labels")
    one_hot = np.eye(teacher_proba.shape[1], dtype=np.float32)[labels]
    return (alpha * teacher_proba + (1 - alpha) * one_hot).astype(np.float32)


def student_config(distill_config: DistillConfig, train: TrainConfig) -> TrainConfig:
    """The shared training recipe with the student's own size, length, learning rate and dropout
    (where set), predicting without shifted copies: the student is there to serve fast. It learns
    the teacher's probabilities in one stage with one head (soft targets have no coarser labels
    to give extra heads)."""
    own = {key: getattr(distill_config, key) for key in ("lr", "dropout") if getattr(distill_config, key) is not None}
    return train.model_copy(update={
        "epochs": distill_config.epochs, "width": distill_config.width, "depth": distill_config.depth,
        "tta_shift": 0, "stages": [], "heads": {}, **own,
    })


def distill(
    x_train: np.ndarray,
    y_train: np.ndarray,
    teacher_proba: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: DistillConfig,
    train: TrainConfig,
    runtime: Runtime,
    on_epoch: EpochCallback | None = None,
    checkpoint_dir: Path | None = None,
    warn: Callable[[str], None] = print,
) -> TrainedModel:
    """Train a student ResidualCNN on (N, H, W) training images against the teacher's
    probabilities (already tempered) mixed with the labels; validation uses the labels only."""
    targets = mixed_targets(teacher_proba, y_train, config.alpha)
    return fit(
        x_train, targets, x_val, y_val, num_classes=teacher_proba.shape[1], config=student_config(config, train),
        runtime=runtime, on_epoch=on_epoch, checkpoint_dir=checkpoint_dir, warn=warn,
    )


def report_metrics(report: dict) -> dict[str, float]:
    """The figures of a distill report (steps.distill_step) as flat `distill.<part>.<figure>`
    numbers for a tracker: the teacher's, the student's training time, and each variant's."""
    parts = {"teacher": report["teacher"], "student": {"train_seconds": report["student"]["train_seconds"]}}
    parts.update(report["variants"])
    return {
        f"distill.{part}.{key}": float(value)
        for part, figures in parts.items()
        for key, value in figures.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
