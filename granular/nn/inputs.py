"""What a network reads: grey or colour images for the CNN, a table's encoded columns for the MLP.

Each kind of input knows its tensors, how they are scaled, which network reads them and how a
training batch is augmented, so the training loop (granular/nn/train.py) asks nothing else of it.
Rows are selected with `inputs[rows]`, as with an array.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from granular.config import TrainConfig
from granular.nn.models import CNNConfig, LevelHeads, MLPConfig, ResidualCNN, TabularMLP, stem_pool_for
from granular.store.image_file import CHUNK_BYTES

UNKNOWN = -1  # the code of a category not seen in the training split

Statistic = float | torch.Tensor


class NetworkInputs(Protocol):
    spatial_tta: bool  # may a prediction average over shifted and mirrored copies of the input?

    def __len__(self) -> int: ...

    def __getitem__(self, rows) -> "NetworkInputs": ...

    def to_device(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The unscaled inputs of the network's forward, on `device`."""

    def resident(self, device: torch.device) -> tuple[Any, ...]:
        """The training inputs as the loop takes its batches from them: indexed by a batch's
        rows (a tensor), each gives that batch's unscaled tensor on `device`."""

    def statistics(self, device: torch.device) -> tuple[Statistic, Statistic]:
        """Mean and deviation that scale the inputs, measured on these (the training) rows."""

    def scaled(self, tensors: tuple[torch.Tensor, ...], mean: Statistic, std: Statistic) -> tuple[torch.Tensor, ...]: ...

    def network(self, num_classes: int, config: TrainConfig, level_heads: LevelHeads | None = None) -> nn.Module:
        """The untrained network, with an extra head per coarser level where given (level ->
        the ancestor of each class)."""

    def augment(self, batch: tuple[torch.Tensor, ...], config: TrainConfig, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """A training batch (on the device, unscaled) with the configured random changes."""

    def test_time_copies(
        self, tensors: tuple[torch.Tensor, ...], mirror: bool, shift: int
    ) -> list[tuple[torch.Tensor, ...]]:
        """The unscaled inputs a prediction averages over: these, and for images their copies
        shifted by `shift` pixels and mirrored (with `mirror`)."""

    def arrays(self) -> list[np.ndarray]:
        """Everything the inputs hold, for a fingerprint of the data."""


@dataclass(frozen=True)
class Pixels:
    """(N, H, W) grey images or (N, H, W, C) colour ones, pixels 0..255 (float after pooling).
    Trained with random translation, flips and erasing; scaled by the mean and deviation of all
    pixels of each channel."""

    images: np.ndarray
    spatial_tta = True

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, rows) -> "Pixels":
        return Pixels(self.images[rows])

    def to_device(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        tensor = torch.as_tensor(self.images, dtype=torch.float32)
        tensor = tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
        return (tensor.to(device),)  # (N, C, H, W)

    def resident(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        return self.to_device(device)

    def statistics(self, device: torch.device) -> tuple[Statistic, Statistic]:
        if self.images.ndim == 3:
            return float(np.mean(self.images, dtype=np.float64)), float(np.std(self.images, dtype=np.float64)) or 1.0
        mean = self.images.mean(axis=(0, 1, 2), dtype=np.float64)
        std = self.images.std(axis=(0, 1, 2), dtype=np.float64)
        std[std == 0] = 1.0  # a constant channel stays constant (at zero)
        as_channels = (1, -1, 1, 1)  # broadcast over (N, C, H, W)
        return (torch.as_tensor(mean, dtype=torch.float32, device=device).reshape(as_channels),
                torch.as_tensor(std, dtype=torch.float32, device=device).reshape(as_channels))

    def scaled(self, tensors, mean, std):
        return _scaled_images(tensors, mean, std)

    def network(self, num_classes: int, config: TrainConfig, level_heads: LevelHeads | None = None) -> nn.Module:
        return ResidualCNN(CNNConfig(
            in_channels=1 if self.images.ndim == 3 else self.images.shape[3], num_classes=num_classes, width=config.width, depth=config.depth,
            dropout=config.dropout, stem_pool=stem_pool_for(self.images.shape[1]), level_heads=level_heads or {},
        ))

    def augment(self, batch, config, generator):
        return _augmented_images(batch, config, generator)

    def test_time_copies(self, tensors, mirror, shift):
        return [(copy,) for copy in _test_time_copies(tensors[0], mirror, shift)]

    def arrays(self) -> list[np.ndarray]:
        return [self.images]


@dataclass(frozen=True)
class PixelsOnDisk:
    """Images that stay on disk (a set larger than memory): rows of `source`, an ImageFile of
    the clean images, brought to what the network reads by `transform` (the view's colour and
    resolution) as each batch is read. Trained, scaled and predicted as Pixels are; the
    statistics are summed a block of rows at a time."""

    source: Any  # granular.store.image_file.ImageFile
    rows: np.ndarray  # int64: this input's images in `source`
    transform: Callable[[np.ndarray], np.ndarray]
    spatial_tta = True

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, rows) -> "PixelsOnDisk":
        return PixelsOnDisk(self.source, self.rows[rows], self.transform)

    def read(self, rows=slice(None)) -> Pixels:
        return Pixels(self.transform(self.source.read(self.rows[rows])))

    def to_device(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        return self.read().to_device(device)

    def resident(self, device: torch.device) -> tuple["_BatchesFromDisk", ...]:
        return (_BatchesFromDisk(self, device),)

    def statistics(self, device: torch.device) -> tuple[Statistic, Statistic]:
        first = self.read(slice(0, 1)).images
        channels = 1 if first.ndim == 3 else first.shape[3]
        block = max(1, CHUNK_BYTES // (8 * first.size))  # rows whose pixels take CHUNK_BYTES as float64
        total, squares = np.zeros(channels), np.zeros(channels)
        for start in range(0, len(self), block):
            pixels = self.read(slice(start, start + block)).images.reshape(-1, channels).astype(np.float64)
            total, squares = total + pixels.sum(axis=0), squares + (pixels**2).sum(axis=0)
        count = len(self) * first.shape[1] * first.shape[2]
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
        std[std == 0] = 1.0  # a constant channel stays constant (at zero)
        if first.ndim == 3:
            return float(mean[0]), float(std[0])
        as_channels = (1, -1, 1, 1)
        return (torch.as_tensor(mean, dtype=torch.float32, device=device).reshape(as_channels),
                torch.as_tensor(std, dtype=torch.float32, device=device).reshape(as_channels))

    def scaled(self, tensors, mean, std):
        return _scaled_images(tensors, mean, std)

    def network(self, num_classes: int, config: TrainConfig, level_heads: LevelHeads | None = None) -> nn.Module:
        return self.read(slice(0, 1)).network(num_classes, config, level_heads)

    def augment(self, batch, config, generator):
        return _augmented_images(batch, config, generator)

    def test_time_copies(self, tensors, mirror, shift):
        return [(copy,) for copy in _test_time_copies(tensors[0], mirror, shift)]

    def arrays(self) -> list[np.ndarray]:
        # The rows and a sample of their images, not all of them: reading the set to tell one
        # training from another would cost an epoch.
        sample = np.unique(np.linspace(0, len(self) - 1, num=min(len(self), 256)).astype(np.int64))
        return [self.rows, np.asarray(self.source.shape), self.source.read(self.rows[sample])]


@dataclass(frozen=True)
class _BatchesFromDisk:
    """A training's inputs on disk, indexed by a batch's rows: that batch, read and on the device."""

    inputs: PixelsOnDisk
    device: torch.device

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        return self.inputs[rows.cpu().numpy()].to_device(self.device)[0]


@dataclass(frozen=True)
class TableArrays:
    """A table as the MLP sees it: numeric features (imputed, not yet scaled; scaled per
    column) and categorical codes, row by row. Not augmented."""

    numeric: np.ndarray  # (N, F) float32, finite
    codes: np.ndarray  # (N, C) int64: 0..cardinality-1, or UNKNOWN
    cardinalities: tuple[int, ...]  # known categories of each categorical column
    spatial_tta = False

    def __post_init__(self) -> None:
        if self.numeric.ndim != 2 or self.codes.ndim != 2:
            raise ValueError(f"numeric and codes must be 2-d, got shapes {self.numeric.shape} and {self.codes.shape}")
        if len(self.numeric) != len(self.codes):
            raise ValueError(f"{len(self.numeric)} rows of numeric features but {len(self.codes)} of categorical codes")
        if self.codes.shape[1] != len(self.cardinalities):
            raise ValueError(f"{self.codes.shape[1]} categorical columns but {len(self.cardinalities)} cardinalities")
        if self.numeric.shape[1] + self.codes.shape[1] == 0:
            raise ValueError("a table needs at least one feature column")
        if not np.issubdtype(self.codes.dtype, np.integer):
            raise ValueError(f"categorical codes must be integers, got {self.codes.dtype}")
        finite = np.isfinite(self.numeric)
        if not finite.all():
            row, column = np.argwhere(~finite)[0]
            raise ValueError(f"numeric column {column} holds {self.numeric[row, column]} at row {row}: impute first")

    def __len__(self) -> int:
        return len(self.numeric)

    def __getitem__(self, rows) -> "TableArrays":
        return TableArrays(self.numeric[rows], self.codes[rows], self.cardinalities)

    def followed_by(self, other: "TableArrays") -> "TableArrays":
        """These rows, then `other`'s (encoded alike): a table's training and validation rows
        together, dealt into folds when it fuses out of fold."""
        if other.cardinalities != self.cardinalities:
            raise ValueError(f"tables encoded differently: cardinalities {self.cardinalities} and {other.cardinalities}")
        return TableArrays(np.concatenate([self.numeric, other.numeric]), np.concatenate([self.codes, other.codes]),
                           self.cardinalities)

    def to_device(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        numeric = torch.as_tensor(self.numeric, dtype=torch.float32, device=device)
        return numeric, torch.as_tensor(self.codes, dtype=torch.long, device=device)

    def resident(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        return self.to_device(device)

    def statistics(self, device: torch.device) -> tuple[Statistic, Statistic]:
        mean = self.numeric.mean(axis=0, dtype=np.float64)
        std = self.numeric.std(axis=0, dtype=np.float64)
        std[std == 0] = 1.0  # a constant column stays constant (at zero)
        return (torch.as_tensor(mean, dtype=torch.float32, device=device),
                torch.as_tensor(std, dtype=torch.float32, device=device))

    def scaled(self, tensors, mean, std):
        return ((tensors[0] - mean) / std, *tensors[1:])

    def network(self, num_classes: int, config: TrainConfig, level_heads: LevelHeads | None = None) -> nn.Module:
        if level_heads:
            raise ValueError("extra heads are for image networks: a table's MLP has none")
        return TabularMLP(MLPConfig(
            num_numeric=self.numeric.shape[1], cardinalities=self.cardinalities, num_classes=num_classes,
            width=config.width, depth=config.depth, dropout=config.dropout,
        ))

    def augment(self, batch, config, generator):
        return batch

    def test_time_copies(self, tensors, mirror, shift):
        return [tensors]

    def arrays(self) -> list[np.ndarray]:
        return [self.numeric, self.codes, np.asarray(self.cardinalities)]


def _augmented_images(batch: tuple[torch.Tensor, ...], config: TrainConfig, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    pad = max(1, batch[0].shape[-1] // 14)  # 2 pixels at 28x28, 1 at 14x14
    return (_augment(batch[0], pad, config, generator),)


def _scaled_images(tensors: tuple[torch.Tensor, ...], mean: Statistic, std: Statistic) -> tuple[torch.Tensor, ...]:
    return (((tensors[0] - mean) / std).contiguous(memory_format=torch.channels_last),)


def _augment(x: torch.Tensor, pad: int, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Per-image random translation (crop of a zero-padded copy), horizontal flip and random
    erasing, as the config asks; random numbers come from `generator` on the CPU, so a run
    is the same on any device."""
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
    if config.hflip:
        moved = torch.where(flip, moved.flip(-1), moved)
    if config.random_erasing > 0:
        moved = _erase(moved, config.random_erasing, generator)
    return moved


def _test_time_copies(images: torch.Tensor, mirror: bool, shift: int) -> list[torch.Tensor]:
    """Unscaled images, then with `shift`, copies moved by `shift` pixels up-left and down-right
    (zeros fill in, as in training's translation); with `mirror`, each of those mirrored too."""
    copies = [images]
    if shift:
        height, width = images.shape[-2:]
        padded = F.pad(images, (shift, shift, shift, shift))
        copies += [padded[..., :height, :width], padded[..., 2 * shift :, 2 * shift :]]
    if mirror:
        copies += [copy.flip(-1) for copy in copies]
    return copies


def _erase(x: torch.Tensor, chance: float, generator: torch.Generator) -> torch.Tensor:
    """Blank one random rectangle (2-25% of the area, aspect 0.3-3.3) in a `chance` share of images."""
    batch, _, height, width = x.shape
    draws = torch.rand(5, batch, generator=generator)
    area = (0.02 + 0.23 * draws[0]) * height * width
    aspect = torch.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * draws[1])
    h = (area * aspect).sqrt().round().clamp(1, height)
    w = (area / aspect).sqrt().round().clamp(1, width)
    top = (draws[2] * (height - h + 1)).floor()
    left = (draws[3] * (width - w + 1)).floor()
    rows, cols = torch.arange(height)[None, :], torch.arange(width)[None, :]
    inside = (
        ((rows >= top[:, None]) & (rows < (top + h)[:, None]))[:, :, None]
        & ((cols >= left[:, None]) & (cols < (left + w)[:, None]))[:, None, :]
    )  # (B, H, W)
    erase = (inside & (draws[4] < chance)[:, None, None])[:, None].to(x.device)
    return x.masked_fill(erase, 0.0)
