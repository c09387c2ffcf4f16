"""Cleaning: keep valid examples as uint8 images, set every rejected one aside with its reason."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from granular.core.quarantine import UNKNOWN_LABELS
from granular.modalities.images.sources import ORIGINS, RawDataset


@dataclass(frozen=True)
class CleanResult:
    kept: RawDataset  # images as uint8
    rejected: RawDataset  # images as they came in
    reasons: np.ndarray  # (n_rejected,) str: why each rejected example was set aside
    repaired: dict[str, int] = field(default_factory=dict)
    unknown_labels: dict[str, int] = field(default_factory=dict)  # set aside: label id -> examples

    def report(self) -> dict:
        return {
            "examined": len(self.kept) + len(self.rejected),
            "kept": len(self.kept),
            "kept_by_origin": {o: int((self.kept.origin == i).sum()) for i, o in enumerate(ORIGINS)},
            "rejected": len(self.rejected),
            "rejected_by_reason": dict(sorted(Counter(self.reasons.tolist()).items())),
            "repaired": self.repaired,
            UNKNOWN_LABELS: self.unknown_labels,
        }


def subsample(data: RawDataset, limit: int | None, seed: int) -> RawDataset:
    """At most `limit` examples from each official split, drawn at random but reproducibly."""
    if limit is None:
        return data
    rng = np.random.default_rng(seed)
    chosen = []
    for origin in np.unique(data.origin):
        members = np.flatnonzero(data.origin == origin)
        if len(members) > limit:
            members = np.sort(rng.choice(members, size=limit, replace=False))
        chosen.append(members)
    return take(data, np.concatenate(chosen))


def take(data: RawDataset, rows: np.ndarray) -> RawDataset:
    return RawDataset(
        images=data.images[rows], labels=data.labels[rows], origin=data.origin[rows], index=data.index[rows],
        files=None if data.files is None else data.files[rows],
        problems=None if data.problems is None else data.problems[rows],
    )


def _conflicting_duplicates(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Boolean mask of images that occur more than once with different labels."""
    if len(images) == 0:
        return np.zeros(0, dtype=bool)
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    keys = flat.view(np.dtype((np.void, flat.shape[1] * flat.dtype.itemsize))).ravel()
    _, group = np.unique(keys, return_inverse=True)
    # A group conflicts when its smallest and largest label differ.
    lowest = np.full(group.max() + 1, np.iinfo(np.int64).max)
    highest = np.full(group.max() + 1, np.iinfo(np.int64).min)
    np.minimum.at(lowest, group, labels)
    np.maximum.at(highest, group, labels)
    return (lowest != highest)[group]


def clean(data: RawDataset, num_classes: int, max_pixel: int = 255) -> CleanResult:
    """Reject the files that are not pictures to train on (their problem), non-finite or
    out-of-range pixels and unknown labels; rescale [0, max_pixel] to 0..255 and round to uint8;
    then reject identical images that carry conflicting labels."""
    n = len(data)
    flat = data.images.reshape(n, int(np.prod(data.images.shape[1:]))).astype(np.float64, copy=False)
    reasons = np.full(n, "", dtype=object)
    if data.problems is not None:
        reasons[:] = data.problems

    def reject(mask: np.ndarray, reason: str) -> None:
        reasons[mask & (reasons == "")] = reason

    reject(~np.isfinite(flat).all(axis=1), "non-finite pixel value (NaN or inf)")
    with np.errstate(invalid="ignore"):
        reject(((flat < 0) | (flat > max_pixel)).any(axis=1), f"pixel value outside [0, {max_pixel}]")
    outside_reason = f"label outside the taxonomy's 0..{num_classes - 1}"
    reject((data.labels < 0) | (data.labels >= num_classes), outside_reason)
    outside = reasons == outside_reason  # the examples set aside for it (not for an earlier fault)

    valid = np.flatnonzero(reasons == "")
    on_scale = flat[valid] * (255.0 / max_pixel)
    rounded = np.round(on_scale)
    images = rounded.astype(np.uint8).reshape((-1,) + data.images.shape[1:])
    # Compared after rounding: that is what the models will see.
    conflicted = _conflicting_duplicates(images, data.labels[valid])
    reasons[valid[conflicted]] = "identical image carries conflicting labels"

    kept_rows = valid[~conflicted]
    kept = RawDataset(
        images=images[~conflicted],
        labels=data.labels[kept_rows].astype(np.int64),
        origin=data.origin[kept_rows],
        index=data.index[kept_rows],
    )
    rejected = np.flatnonzero(reasons != "")
    fractional = (on_scale != rounded).any(axis=1)[~conflicted]
    return CleanResult(
        kept=kept,
        rejected=take(data, rejected),
        reasons=reasons[rejected].astype(str),
        repaired={"images_with_fractional_pixels_rounded": int(fractional.sum())},
        unknown_labels={str(label): int(n) for label, n in zip(*np.unique(data.labels[outside], return_counts=True))},
    )
