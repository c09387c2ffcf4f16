"""Training and inference for one view: data resident on the device, augmentation on the device."""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from granular.atomic import atomic_path
from granular.config import TrainConfig
from granular.device import Runtime
from granular.evaluate import log_loss
from granular.models import CNNConfig, ResidualCNN, stem_pool_for

EpochCallback = Callable[[dict], None]


@dataclass
class TrainedModel:
    model: ResidualCNN
    mean: float  # input normalisation, measured on the training split
    std: float
    history: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # what the model is for: view, classes, config
    val_proba: np.ndarray | None = None  # validation probabilities of the final weights


def _as_batch(images: np.ndarray, runtime: Runtime) -> torch.Tensor:
    """(N, H, W) array -> (N, 1, H, W) float tensor on the device, kept in [0, 255]."""
    return torch.as_tensor(images, dtype=torch.float32).unsqueeze(1).to(runtime.device)


def _augment(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Per-image random translation (crop of a zero-padded copy) and horizontal flip."""
    batch, channels, height, width = x.shape
    device = x.device
    shift = torch.randint(0, 2 * pad + 1, (2, batch), generator=generator).to(device)
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
    rows = shift[0][:, None] + torch.arange(height, device=device)  # (B, H)
    cols = shift[1][:, None] + torch.arange(width, device=device)  # (B, W)
    b = torch.arange(batch, device=device)[:, None, None]
    moved = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    moved = moved.permute(0, 3, 1, 2)
    flip = (torch.rand(batch, generator=generator) < 0.5).to(device)[:, None, None, None]
    return torch.where(flip, moved.flip(-1), moved)


def _autocast(runtime: Runtime):
    if runtime.autocast_dtype is None:
        return nullcontext()
    return torch.autocast(runtime.device.type, dtype=runtime.autocast_dtype)


def fit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    num_classes: int,
    config: TrainConfig,
    runtime: Runtime,
    on_epoch: EpochCallback | None = None,
) -> TrainedModel:
    """Train a ResidualCNN with SGD + Nesterov, a one-cycle schedule and label smoothing."""
    if len(x_train) == 0:
        raise ValueError("cannot train on an empty training split")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    mean = float(np.mean(x_train, dtype=np.float64))
    std = float(np.std(x_train, dtype=np.float64)) or 1.0
    xs = _as_batch(x_train, runtime)
    ys = torch.as_tensor(y_train, dtype=torch.long, device=runtime.device)

    cnn = CNNConfig(
        in_channels=1, num_classes=num_classes, width=config.width, stem_pool=stem_pool_for(x_train.shape[1])
    )
    model = ResidualCNN(cnn)
    model = model.to(runtime.device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(xs) / config.batch_size)
    # OneCycleLR divides by zero when its warm-up is shorter than a step: tiny runs (a small
    # segment's expert) get a schedule of at least 5 steps, not all of which they take.
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=max(config.epochs * steps_per_epoch, 5), pct_start=0.25
    )
    pad = max(1, xs.shape[-1] // 14)  # 2 pixels at 28x28, 1 at 14x14
    trained = TrainedModel(model=model, mean=mean, std=std)

    for epoch in range(1, config.epochs + 1):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(len(xs), generator=generator).to(runtime.device)
        loss_sum = torch.zeros((), device=runtime.device)
        for start in range(0, len(xs), config.batch_size):
            rows = order[start : start + config.batch_size]
            batch = _augment(xs[rows], pad, generator)
            batch = ((batch - mean) / std).contiguous(memory_format=torch.channels_last)
            with _autocast(runtime):
                loss = F.cross_entropy(model(batch), ys[rows], label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach() * len(rows)  # stays on the device: no sync per step
        seconds = time.perf_counter() - started
        val_proba = predict_proba(trained, x_val, runtime, batch_size=1024)
        record = {
            "epoch": epoch,
            "train_loss": float(loss_sum) / len(xs),
            "val_accuracy": float((val_proba.argmax(1) == y_val).mean()) if len(y_val) else float("nan"),
            "val_loss": log_loss(val_proba, y_val),
            "seconds": seconds,
            "images_per_s": len(xs) / seconds,
            "lr": schedule.get_last_lr()[0],
        }
        trained.history.append(record)
        trained.val_proba = val_proba
        if on_epoch is not None:
            on_epoch(record)
    return trained


@torch.no_grad()
def predict_proba(
    trained: TrainedModel, images: np.ndarray, runtime: Runtime, batch_size: int = 1024, tta: bool = True
) -> np.ndarray:
    """Class probabilities (N, classes); with tta, averaged with the mirrored image."""
    model = trained.model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = (_as_batch(images[start : start + batch_size], runtime) - trained.mean) / trained.std
        batch = batch.contiguous(memory_format=torch.channels_last)
        with _autocast(runtime):
            proba = F.softmax(model(batch).float(), dim=1)
            if tta:
                proba = (proba + F.softmax(model(batch.flip(-1)).float(), dim=1)) / 2
        out.append(proba.cpu())
    if not out:
        return np.zeros((0, model.config.num_classes), dtype=np.float32)
    return torch.cat(out).numpy()


def predict_routed(
    experts: list[TrainedModel], segment: np.ndarray, images: np.ndarray, runtime: Runtime
) -> np.ndarray:
    """Probabilities of each example from the expert of its segment (one expert: a plain view)."""
    out = np.zeros((len(images), experts[0].model.config.num_classes), dtype=np.float32)
    for number, expert in enumerate(experts):
        rows = segment == number
        if rows.any():
            out[rows] = predict_proba(expert, images[rows], runtime)
    return out


def save_checkpoint(path: Path, trained: TrainedModel) -> None:
    """Everything needed to rebuild the model: its config, weights and input normalisation."""
    state = {
        "cnn_config": trained.model.config.to_dict(),
        "state_dict": trained.model.state_dict(),
        "mean": trained.mean,
        "std": trained.std,
        "history": trained.history,
        "meta": trained.meta,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, runtime: Runtime) -> TrainedModel:
    state = torch.load(path, map_location=runtime.device, weights_only=True)
    model = ResidualCNN(CNNConfig(**state["cnn_config"]))
    model.load_state_dict(state["state_dict"])
    model = model.to(runtime.device, memory_format=torch.channels_last)
    return TrainedModel(
        model=model, mean=state["mean"], std=state["std"], history=state["history"], meta=state["meta"]
    )
