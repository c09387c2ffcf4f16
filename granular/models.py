"""A small residual CNN for grey images of any size the pooling factors allow."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class CNNConfig:
    in_channels: int
    num_classes: int
    width: int = 32
    depth: int = 1  # residual blocks per stage
    dropout: float = 0.1
    # Halve the input in the stem? Yes for 28x28 and up, so that the residual stages see
    # 14x14 and 7x7 maps whatever the input resolution (a 14x14 input skips it).
    stem_pool: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def stem_pool_for(height: int) -> bool:
    return height >= 24


class ResidualCNN(nn.Module):
    """Two stages of conv -> pool -> `depth` residual blocks, then global pooling and a linear head."""

    def __init__(self, config: CNNConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.features = nn.Sequential(
            _conv_bn(config.in_channels, w),  # (B, w, H, W)
            nn.MaxPool2d(2) if config.stem_pool else nn.Identity(),  # (B, w, S, S), S = 14 for 28 or 14
            nn.Sequential(*(Residual(w) for _ in range(config.depth))),
            _conv_bn(w, 2 * w),
            nn.MaxPool2d(2),  # (B, 2w, S/2, S/2)
            nn.Sequential(*(Residual(2 * w) for _ in range(config.depth))),
            _conv_bn(2 * w, 4 * w),
            nn.AdaptiveMaxPool2d(1),  # (B, 4w, 1, 1)
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(4 * w, config.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
