"""How a saved image view reads raw images (N, H, W) or (N, H, W, C) at full size, and what a
served image model accepts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from granular.modalities.images.color import as_seen
from granular.modalities.images.segments import SEGMENTER_FILE, ClusterSegmenter
from granular.modalities.images.views import seen

MODALITY = "images"


@dataclass(frozen=True)
class ImageReader:
    """Brings raw images to the view's colour (granular/modalities/images/color.py) and pools
    them to its resolution; routes each to its cluster's expert."""

    resolution: int
    segmenter: ClusterSegmenter | None = None
    color: str | None = None  # the view's `color`
    modality = MODALITY

    def network_inputs(self, raw: np.ndarray):
        from granular.nn.inputs import Pixels  # torch loads only where a network runs

        return Pixels(seen(raw, self.color, self.resolution))

    def columns_read(self) -> list[str]:
        return []  # pixels

    def route(self, raw: np.ndarray) -> np.ndarray:
        if not self.segmenter:
            return np.zeros(len(raw), dtype=np.int64)
        return self.segmenter.assign(as_seen(raw, self.color))

    def save(self, folder: Path) -> dict[str, Any]:
        if self.segmenter:
            self.segmenter.save(folder / SEGMENTER_FILE)
        return {"resolution": self.resolution, "segmented": self.segmenter is not None, "color": self.color}

    def files(self, folder: Path) -> list[Path]:
        return [folder / SEGMENTER_FILE] if self.segmenter else []

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any]) -> "ImageReader":
        segmenter = ClusterSegmenter.load(folder / SEGMENTER_FILE) if spec["segmented"] else None
        return cls(resolution=spec["resolution"], segmenter=segmenter, color=spec.get("color"))


@dataclass(frozen=True)
class ImageInput:
    """A served image model takes (N, H, W) grey pixels 0..255, or (N, H, W, C) colour ones, or
    one row of H*W*C pixels per image."""

    image_shape: tuple[int, int]
    channels: int = 1
    modality = MODALITY

    @property
    def pixels(self) -> tuple[int, ...]:
        """One image's array shape: (H, W) grey, (H, W, C) in colour."""
        return tuple(self.image_shape) if self.channels == 1 else (*self.image_shape, self.channels)

    def to_json(self) -> dict[str, Any]:
        return {"modality": self.modality, "image_shape": list(self.image_shape), "channels": self.channels}

    def parse(self, model_input: Any) -> np.ndarray:
        images = np.asarray(model_input)
        if images.ndim == 2 and images.shape[1] == int(np.prod(self.pixels)):
            images = images.reshape(-1, *self.pixels)
        if images.shape[1:] != self.pixels:
            colour = "grey" if self.channels == 1 else f"{self.channels}-channel"
            raise ValueError(
                f"expected {colour} images of {'x'.join(map(str, self.image_shape))} pixels, (N, "
                f"{', '.join(map(str, self.pixels))}); got an array of shape {images.shape}"
            )
        return images

    def example(self, raw: np.ndarray) -> np.ndarray:
        """A few raw inputs as the served model's input example: (N, H, W[, C]) uint8."""
        return np.ascontiguousarray(raw, dtype=np.uint8)
