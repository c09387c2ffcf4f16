"""One split assignment shared by every view, and the views themselves (label level x resolution)."""
from __future__ import annotations

import numpy as np

from granular.config import ViewConfig
from granular.sources import TEST, RawDataset
from granular.taxonomy import Taxonomy

SPLITS = ("train", "val", "test")
TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT = range(3)


class PartitionError(ValueError):
    """A view or split cannot be built; the message names the view, split and class."""


def assign_splits(labels: np.ndarray, origin: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Split code per example: the official test set stays test; the rest is split train/val,
    stratified by label, with a seeded generator (the same seed gives the same split)."""
    split = np.full(len(labels), TRAIN_SPLIT, dtype=np.int8)
    split[origin == TEST] = TEST_SPLIT
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        members = np.flatnonzero((labels == label) & (origin != TEST))
        n_val = int(round(len(members) * val_fraction))
        split[rng.permutation(members)[:n_val]] = VAL_SPLIT
    return split


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


def build_view(data: RawDataset, split: np.ndarray, taxonomy: Taxonomy, view: ViewConfig) -> dict[str, dict]:
    """Arrays of one view, per split: x (pooled images), y (labels at the view's level), and the
    example ids (origin, index) that tie every view back to the same examples."""
    if view.level not in taxonomy.names:
        raise PartitionError(f"view {view.name}: level {view.level!r} is not in the taxonomy {list(taxonomy.levels)}")
    x = pool(data.images, view.resolution)
    y = taxonomy.map_labels(data.labels, view.level)
    n_classes = taxonomy.num_classes(view.level)
    out = {}
    for code, name in enumerate(SPLITS):
        rows = split == code
        missing = sorted(set(range(n_classes)) - set(np.unique(y[rows]).tolist()))
        if missing:
            names = [taxonomy.names[view.level][c] for c in missing]
            raise PartitionError(f"view {view.name}: split {name!r} has no example of class(es) {names}")
        out[name] = {"x": x[rows], "y": y[rows], "origin": data.origin[rows], "index": data.index[rows]}
    return out
