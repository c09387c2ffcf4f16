"""Class weights for an imbalanced target: how much each class's examples count in a loss."""
from __future__ import annotations

import numpy as np

from granular.config import ClassWeight
from granular.core.taxonomy import Taxonomy

def class_weights(setting: ClassWeight, y: np.ndarray, taxonomy: Taxonomy, level: str) -> np.ndarray | None:
    """(classes of `level`,) weights, or None for every class alike.

    balanced: each class weighs n / (classes * its count) in the labels `y` (scikit-learn's
    rule), so that every class adds up to the same share of the loss; a class `y` lacks weighs 1.
    A mapping: class name -> weight, for the level whose classes it names (1 for a class left
    out); at a level none of its names belongs to (a coarser stage), every class weighs 1. A
    name that is no class of any level is refused."""
    if setting is None:
        return None
    names = taxonomy.names[level]
    if setting == "balanced":
        counts = np.bincount(y, minlength=len(names))
        return np.where(counts > 0, len(y) / (len(names) * np.maximum(counts, 1)), 1.0)
    known = {name for level_names in taxonomy.names.values() for name in level_names}
    unknown = sorted(set(setting) - known)
    if unknown:
        raise ValueError(f"class_weight: {unknown} are not classes of the taxonomy (its {level} classes: {list(names)})")
    if not set(setting) & set(names):
        return None
    return np.array([setting.get(name, 1.0) for name in names], dtype=np.float64)
