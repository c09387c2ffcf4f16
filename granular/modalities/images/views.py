"""An image view: which clean images it holds per split (their rows, labels at its level), and
how it sees them (its colour, pooled to its resolution), applied as the images are read."""
from __future__ import annotations

from functools import partial

import numpy as np

from granular.config import ImageView
from granular.core.partition import SPLITS, PartitionError, pool, require_every_class
from granular.core.taxonomy import Taxonomy
from granular.modalities.images.color import as_seen
from granular.modalities.images.sources import RawDataset
from granular.store.image_file import ImageFile

GIB = 1 << 30


def build_view(data: RawDataset, split: np.ndarray, taxonomy: Taxonomy, view: ImageView) -> dict[str, dict]:
    """Arrays of one view, per split: rows (of the clean images), y (labels at the view's level),
    and the example ids (origin, index) that tie every view back to the same examples. The
    images are not copied: a view is a way of seeing the clean ones (`seen`)."""
    if view.level not in taxonomy.names:
        raise PartitionError(f"view {view.name}: level {view.level!r} is not in the taxonomy {list(taxonomy.levels)}")
    y = taxonomy.map_labels(data.labels, view.level)
    require_every_class(y, split, taxonomy.names[view.level], f"view {view.name}")
    out = {}
    for code, name in enumerate(SPLITS):
        rows = np.flatnonzero(split == code)
        out[name] = {"rows": rows, "y": y[rows], "origin": data.origin[rows], "index": data.index[rows]}
    return out


def seen(images: np.ndarray, color: str | None, resolution: int) -> np.ndarray:
    """Clean images as a view of `color` and `resolution` sees them."""
    return pool(as_seen(images, color), resolution)


def view_inputs(images: np.ndarray | ImageFile, rows: np.ndarray, view: ImageView, in_memory_gib: float):
    """What the view's network reads of `rows`: read into memory once (Pixels) where they take at
    most `in_memory_gib` as float32, else left on disk and read a batch at a time (PixelsOnDisk)."""
    from granular.nn.inputs import Pixels, PixelsOnDisk  # torch loads only where a network trains

    transform = partial(seen, color=view.color, resolution=view.resolution)
    channels = 1 if view.color == "grey" or len(images.shape) == 3 else images.shape[3]
    size = len(rows) * view.resolution**2 * channels * 4
    if size <= in_memory_gib * GIB:
        return Pixels(transform(images[rows]))
    return PixelsOnDisk(images, rows, transform)
