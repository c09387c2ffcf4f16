"""One split assignment shared by every view (train/val/test, and the validation folds), and
the pooling that gives an image view its resolution."""
from __future__ import annotations

import numpy as np

from granular.core.taxonomy import Taxonomy

SPLITS = ("train", "val", "test")
# The official split an example came from (a dataset's own train/test files; a table's held-out
# test rows): its `origin`. The official test set stays the test split.
ORIGINS = ("train", "test")
TRAIN, TEST = range(2)
TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT = range(3)


class PartitionError(ValueError):
    """A view or split cannot be built; the message names the view, split and class."""


def pool(images: np.ndarray, resolution: int) -> np.ndarray:
    """Average-pool (N, H, W) images, or (N, H, W, C) colour ones, down to resolution x resolution."""
    n, height, width = images.shape[:3]
    fy, fx = height // resolution, width // resolution
    if fy * resolution != height or fx * resolution != width:
        raise PartitionError(f"resolution {resolution} does not divide images of {height}x{width}")
    if fy == fx == 1:
        return images
    blocks = images.reshape(n, resolution, fy, resolution, fx, *images.shape[3:])
    return blocks.mean(axis=(2, 4), dtype=np.float32)


def assign_splits(
    labels: np.ndarray, origin: np.ndarray, val_fraction: float, seed: int, given_val: np.ndarray | None = None
) -> np.ndarray:
    """Split code per example: the official test set stays test; the examples of `given_val`
    validate where there are any; else the rest is split train/val, stratified by label, with a
    seeded generator (the same seed gives the same split)."""
    split = np.full(len(labels), TRAIN_SPLIT, dtype=np.int8)
    split[origin == TEST] = TEST_SPLIT
    if given_val is not None and given_val.any():
        split[given_val & (origin != TEST)] = VAL_SPLIT
        return split
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        members = np.flatnonzero((labels == label) & (origin != TEST))
        n_val = int(round(len(members) * val_fraction))
        split[rng.permutation(members)[:n_val]] = VAL_SPLIT
    return split


def assign_folds(
    labels: np.ndarray, split: np.ndarray, folds: int, seed: int, among: tuple[int, ...] = (VAL_SPLIT,)
) -> np.ndarray:
    """Fold 0..folds-1 of each example of the splits `among` (the validation split; or training
    and validation, out of fold), stratified by label (-1 elsewhere): the fusion is fitted on some
    folds and scored on the others."""
    fold = np.full(len(labels), -1, dtype=np.int8)
    rng = np.random.default_rng([seed, folds])  # its own stream: adding folds leaves the split as it was
    offset = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero((labels == label) & np.isin(split, among)))
        fold[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)  # continue the round-robin so small classes do not all start at fold 0
    return fold


def out_of_fold_splits(split: np.ndarray, max_rows: int) -> tuple[int, ...]:
    """The splits a table's fusion is fitted on: training and validation together, out of fold,
    when they hold at most `max_rows` rows (each row's answers then come from models that did not
    learn it); else the validation split alone, which is large enough and spares the fold models."""
    fitting = int(np.isin(split, (TRAIN_SPLIT, VAL_SPLIT)).sum())
    return (TRAIN_SPLIT, VAL_SPLIT) if 0 < fitting <= max_rows else (VAL_SPLIT,)


def fusion_rows(split: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """The rows (of splits.npz) the fusion is fitted on, in the order their outputs are kept: the
    training rows then the validation rows where the training rows have folds (out of fold), else
    the validation rows."""
    train = np.flatnonzero(split == TRAIN_SPLIT)
    val = np.flatnonzero(split == VAL_SPLIT)
    return np.concatenate([train, val]) if (fold[train] >= 0).any() else val


def check_every_class_in_every_split(fine_labels: np.ndarray, split: np.ndarray, taxonomy: Taxonomy) -> None:
    """Every class of every taxonomy level must occur in train, val and test; coarsest level
    first, so a whole missing group is reported as the group."""
    for level in reversed(taxonomy.levels):
        require_every_class(taxonomy.map_labels(fine_labels, level), split, taxonomy.names[level], f"level {level}")


def require_every_class(y: np.ndarray, split: np.ndarray, class_names: tuple[str, ...], where: str) -> None:
    _require_examples(split, where)
    for code, name in enumerate(SPLITS):
        missing = sorted(set(range(len(class_names))) - set(np.unique(y[split == code]).tolist()))
        if missing:
            names = [class_names[c] for c in missing]
            raise PartitionError(f"{where}: split {name!r} has no example of class(es) {names}")


def _require_examples(split: np.ndarray, where: str) -> None:
    """An empty split is refused as such, before its classes are looked for."""
    sizes = {name: int((split == code).sum()) for code, name in enumerate(SPLITS)}
    empty = [name for name, n in sizes.items() if n == 0]
    if empty:
        raise PartitionError(f"{where}: split(s) {empty} have 0 examples, nothing to train or measure on (sizes: {sizes})")
