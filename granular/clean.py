"""Cleaning: keep valid examples as uint8 images, set every rejected one aside with its reason."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from granular.sources import ORIGINS, RawDataset


@dataclass(frozen=True)
class CleanResult:
    kept: RawDataset  # images as uint8
    rejected: RawDataset  # images as they came in
    reasons: np.ndarray  # (n_rejected,) str: why each rejected example was set aside
    repaired: dict[str, int] = field(default_factory=dict)

    def report(self) -> dict:
        return {
            "examined": len(self.kept) + len(self.rejected),
            "kept": len(self.kept),
            "kept_by_origin": {o: int((self.kept.origin == i).sum()) for i, o in enumerate(ORIGINS)},
            "rejected": len(self.rejected),
            "rejected_by_reason": dict(sorted(Counter(self.reasons.tolist()).items())),
            "repaired": self.repaired,
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
        images=data.images[rows], labels=data.labels[rows], origin=data.origin[rows], index=data.index[rows]
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
    """Reject non-finite or out-of-range pixels, unknown labels and identical images with
    conflicting labels; round fractional pixels and rescale [0, max_pixel] to uint8."""
    n = len(data)
    flat = data.images.reshape(n, -1).astype(np.float64, copy=False)
    reasons = np.full(n, "", dtype=object)

    def reject(mask: np.ndarray, reason: str) -> None:
        reasons[mask & (reasons == "")] = reason

    reject(~np.isfinite(flat).all(axis=1), "non-finite pixel value (NaN or inf)")
    with np.errstate(invalid="ignore"):
        reject(((flat < 0) | (flat > max_pixel)).any(axis=1), f"pixel value outside [0, {max_pixel}]")
    reject((data.labels < 0) | (data.labels >= num_classes), f"label outside the taxonomy's 0..{num_classes - 1}")
    valid = reasons == ""
    conflicted = np.zeros(n, dtype=bool)
    conflicted[valid] = _conflicting_duplicates(data.images[valid], data.labels[valid])
    reject(conflicted, "identical image carries conflicting labels")

    keep = reasons == ""
    kept_pixels = flat[keep]
    fractional = int((kept_pixels != np.round(kept_pixels)).any(axis=1).sum())
    scaled = np.round(kept_pixels * (255.0 / max_pixel)).astype(np.uint8)
    kept = RawDataset(
        images=scaled.reshape((-1,) + data.images.shape[1:]),
        labels=data.labels[keep].astype(np.int64),
        origin=data.origin[keep],
        index=data.index[keep],
    )
    return CleanResult(
        kept=kept,
        rejected=take(data, np.flatnonzero(~keep)),
        reasons=reasons[~keep].astype(str),
        repaired={"fractional_pixels_rounded": fractional},
    )
