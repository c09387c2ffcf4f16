"""The levels of a regression target: the number itself (level `fine`), and coarser levels that
are bins of it (data.table.bins). The bins make a taxonomy like a classifier's, so the steps
that split, validate and train a coarse view treat them as classes: the splits are stratified
by the finest bins, and a view at a binned level learns which bin a row's value falls in."""
from __future__ import annotations

import numpy as np

from granular.core.taxonomy import Taxonomy

FINE = "fine"  # the target's own level
WHOLE_RANGE = "all"  # the one bin of a target with no bins declared


def bin_names(cuts: list[float]) -> tuple[str, ...]:
    """'below 100', '100 to 200', '200 and above' for cuts [100, 200]."""
    number = [f"{c:g}" for c in cuts]
    inner = [f"{low} to {high}" for low, high in zip(number, number[1:])]
    return (f"below {number[0]}", *inner, f"{number[-1]} and above")


def bin_ids(values: np.ndarray, cuts: list[float]) -> np.ndarray:
    """The bin of each value: bin k runs from cut k-1 up to, not including, cut k."""
    return np.searchsorted(np.asarray(cuts, dtype=np.float64), np.asarray(values, dtype=np.float64), side="right")


def bins_taxonomy(bins: dict[str, list[float]]) -> Taxonomy:
    """Levels fine, then each binned level; the fine "classes" are the finest level's bins (the
    strata of the split), or one class spanning every value when no bins are declared."""
    if not bins:
        return Taxonomy(levels=(FINE,), names={FINE: (WHOLE_RANGE,)}, parent={FINE: np.zeros(1, dtype=np.int64)})
    finest = next(iter(bins.values()))
    # A value in the middle of each finest bin: which bin of each coarser level holds it.
    points = np.asarray([finest[0] - 1, *((a + b) / 2 for a, b in zip(finest, finest[1:])), finest[-1] + 1])
    names = {FINE: bin_names(finest)} | {level: bin_names(cuts) for level, cuts in bins.items()}
    parent = {FINE: np.arange(len(points), dtype=np.int64)}
    parent |= {level: bin_ids(points, cuts).astype(np.int64) for level, cuts in bins.items()}
    return Taxonomy(levels=(FINE, *bins), names=names, parent=parent)


def fine_bins(values: np.ndarray, bins: dict[str, list[float]]) -> np.ndarray:
    """Each value's fine "class" of `bins_taxonomy(bins)`: its bin at the finest level."""
    if not bins:
        return np.zeros(len(values), dtype=np.int64)
    return bin_ids(values, next(iter(bins.values()))).astype(np.int64)
