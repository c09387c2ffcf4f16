"""How a saved image view reads raw images (N, H, W) at full size, and what a served image model
accepts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from granular.core.partition import pool
from granular.modalities.images.segments import SEGMENTER_FILE, ClusterSegmenter

MODALITY = "images"


@dataclass(frozen=True)
class ImageReader:
    """Pools raw images to the view's resolution; routes each to its cluster's expert."""

    resolution: int
    segmenter: ClusterSegmenter | None = None
    modality = MODALITY

    def network_inputs(self, raw: np.ndarray):
        from granular.nn.inputs import Pixels  # torch loads only where a network runs

        return Pixels(pool(raw, self.resolution))

    def columns_read(self) -> list[str]:
        return []  # pixels

    def route(self, raw: np.ndarray) -> np.ndarray:
        return self.segmenter.assign(raw) if self.segmenter else np.zeros(len(raw), dtype=np.int64)

    def save(self, folder: Path) -> dict[str, Any]:
        if self.segmenter:
            self.segmenter.save(folder / SEGMENTER_FILE)
        return {"resolution": self.resolution, "segmented": self.segmenter is not None}

    def files(self, folder: Path) -> list[Path]:
        return [folder / SEGMENTER_FILE] if self.segmenter else []

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any]) -> "ImageReader":
        segmenter = ClusterSegmenter.load(folder / SEGMENTER_FILE) if spec["segmented"] else None
        return cls(resolution=spec["resolution"], segmenter=segmenter)


@dataclass(frozen=True)
class ImageInput:
    """A served image model takes (N, H, W) pixels 0..255, or one row of H*W pixels per image."""

    image_shape: tuple[int, int]
    modality = MODALITY

    def to_json(self) -> dict[str, Any]:
        return {"modality": self.modality, "image_shape": list(self.image_shape)}

    def parse(self, model_input: Any) -> np.ndarray:
        height, width = self.image_shape
        images = np.asarray(model_input)
        if images.ndim == 2 and images.shape[1] == height * width:
            images = images.reshape(-1, height, width)
        if images.shape[1:] != (height, width):
            raise ValueError(f"expected images of {height}x{width} pixels, got an array of shape {images.shape}")
        return images

    def example(self, raw: np.ndarray) -> np.ndarray:
        """A few raw inputs as the served model's input example: (N, H, W) uint8."""
        return np.ascontiguousarray(raw, dtype=np.uint8)
