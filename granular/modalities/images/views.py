"""An image view's arrays: the images in the view's colour pooled to its resolution, labels at its level."""
from __future__ import annotations

import numpy as np

from granular.config import ImageView
from granular.core.partition import SPLITS, PartitionError, pool, require_every_class
from granular.core.taxonomy import Taxonomy
from granular.modalities.images.color import as_seen
from granular.modalities.images.sources import RawDataset


def build_view(data: RawDataset, split: np.ndarray, taxonomy: Taxonomy, view: ImageView) -> dict[str, dict]:
    """Arrays of one view, per split: x (the images as the view sees them, pooled), y (labels at
    the view's level), and the example ids (origin, index) that tie every view back to the same
    examples."""
    if view.level not in taxonomy.names:
        raise PartitionError(f"view {view.name}: level {view.level!r} is not in the taxonomy {list(taxonomy.levels)}")
    x = pool(as_seen(data.images, view.color), view.resolution)
    y = taxonomy.map_labels(data.labels, view.level)
    require_every_class(y, split, taxonomy.names[view.level], f"view {view.name}")
    out = {}
    for code, name in enumerate(SPLITS):
        rows = split == code
        out[name] = {"x": x[rows], "y": y[rows], "origin": data.origin[rows], "index": data.index[rows]}
    return out


