"""An image view's arrays: the images pooled to the view's resolution, labels at its level."""
from __future__ import annotations

import numpy as np

from granular.config import ImageView
from granular.core.partition import SPLITS, PartitionError, require_every_class
from granular.core.taxonomy import Taxonomy
from granular.modalities.images.sources import RawDataset


def pool(images: np.ndarray, resolution: int) -> np.ndarray:
    """Average-pool (N, H, W) images down to (N, resolution, resolution)."""
    n, height, width = images.shape
    fy, fx = height // resolution, width // resolution
    if fy * resolution != height or fx * resolution != width:
        raise PartitionError(f"resolution {resolution} does not divide images of {height}x{width}")
    if fy == fx == 1:
        return images
    blocks = images.reshape(n, resolution, fy, resolution, fx)
    return blocks.mean(axis=(2, 4), dtype=np.float32)


def build_view(data: RawDataset, split: np.ndarray, taxonomy: Taxonomy, view: ImageView) -> dict[str, dict]:
    """Arrays of one view, per split: x (pooled images), y (labels at the view's level), and the
    example ids (origin, index) that tie every view back to the same examples."""
    if view.level not in taxonomy.names:
        raise PartitionError(f"view {view.name}: level {view.level!r} is not in the taxonomy {list(taxonomy.levels)}")
    x = pool(data.images, view.resolution)
    y = taxonomy.map_labels(data.labels, view.level)
    require_every_class(y, split, taxonomy.names[view.level], f"view {view.name}")
    out = {}
    for code, name in enumerate(SPLITS):
        rows = split == code
        out[name] = {"x": x[rows], "y": y[rows], "origin": data.origin[rows], "index": data.index[rows]}
    return out


