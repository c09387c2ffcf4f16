"""Cleaning: keep valid examples as uint8 images, set every rejected one aside with its reason."""
from __future__ import annotations

import hashlib
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from granular.core.quarantine import UNKNOWN_LABELS
from granular.modalities.images.sources import ORIGINS, RawDataset
from granular.store.image_file import CHUNK_BYTES, ImageFile, ImageWriter, blocks_of


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


def _row_keys(images: np.ndarray) -> np.ndarray:
    """A 16-byte digest of each image's pixels: equal images, equal keys."""
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat], dtype="S16")


def _conflicting_duplicates(keys: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Boolean mask of images (by their keys) that occur more than once with different labels."""
    if len(keys) == 0:
        return np.zeros(0, dtype=bool)
    _, group = np.unique(keys, return_inverse=True)
    # A group conflicts when its smallest and largest label differ.
    lowest = np.full(group.max() + 1, np.iinfo(np.int64).max)
    highest = np.full(group.max() + 1, np.iinfo(np.int64).min)
    np.minimum.at(lowest, group, labels)
    np.maximum.at(highest, group, labels)
    return (lowest != highest)[group]


def _on_scale_already(block: np.ndarray, max_pixel: int) -> bool:
    """Whole numbers in 0..255 by their type: decoded pictures, IDX files."""
    return block.dtype == np.uint8 and max_pixel == 255


def _on_scale(block: np.ndarray, max_pixel: int) -> tuple[np.ndarray, np.ndarray]:
    """A block's pixels rescaled from [0, max_pixel] to 0..255 and rounded (uint8), and whether
    each image had a pixel off the whole numbers."""
    if _on_scale_already(block, max_pixel):
        return block, np.zeros(len(block), dtype=bool)
    flat = block.reshape(len(block), -1).astype(np.float64, copy=False)
    on_scale = flat * (255.0 / max_pixel)
    rounded = np.round(on_scale)
    return rounded.astype(np.uint8).reshape(block.shape), (on_scale != rounded).any(axis=1)


def _block_rows(images: np.ndarray | ImageFile) -> int:
    """Rows per block: a block's pixels as float64 take CHUNK_BYTES at most."""
    return max(1, CHUNK_BYTES // (8 * int(np.prod(images.shape[1:]))))


def clean(data: RawDataset, num_classes: int, max_pixel: int = 255, scratch: Path | None = None) -> CleanResult:
    """Reject the files that are not pictures to train on (their problem), non-finite or
    out-of-range pixels and unknown labels; rescale [0, max_pixel] to 0..255 and round to uint8;
    then reject identical images that carry conflicting labels. The images are read a block at
    a time; the kept ones go to a file in `scratch` where they come from one (a set larger than
    memory), else into memory."""
    n = len(data)
    reasons = np.full(n, "", dtype=object)
    if data.problems is not None:
        reasons[:] = data.problems

    def reject(mask: np.ndarray, reason: str) -> None:
        reasons[mask & (reasons == "")] = reason

    non_finite, off_range = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    keys = np.zeros(n, dtype="S16")  # of each usable image, compared after rounding: what the models see
    fractional = np.zeros(n, dtype=bool)
    for start, block in blocks_of(data.images, _block_rows(data.images)):
        at = np.arange(start, start + len(block))
        if not _on_scale_already(block, max_pixel):
            flat = block.reshape(len(block), -1).astype(np.float64, copy=False)
            non_finite[at] = ~np.isfinite(flat).all(axis=1)
            with np.errstate(invalid="ignore"):
                off_range[at] = ((flat < 0) | (flat > max_pixel)).any(axis=1)
        usable = ~(non_finite[at] | off_range[at])
        scaled, off_whole = _on_scale(block[usable], max_pixel)
        keys[at[usable]], fractional[at[usable]] = _row_keys(scaled), off_whole
    reject(non_finite, "non-finite pixel value (NaN or inf)")
    reject(off_range, f"pixel value outside [0, {max_pixel}]")
    outside_reason = f"label outside the taxonomy's 0..{num_classes - 1}"
    reject((data.labels < 0) | (data.labels >= num_classes), outside_reason)
    outside = reasons == outside_reason  # the examples set aside for it (not for an earlier fault)

    valid = np.flatnonzero(reasons == "")
    conflicted = _conflicting_duplicates(keys[valid], data.labels[valid])
    reasons[valid[conflicted]] = "identical image carries conflicting labels"

    kept_rows = valid[~conflicted]
    kept = RawDataset(
        images=_kept_images(data.images, kept_rows, max_pixel, scratch if isinstance(data.images, ImageFile) else None),
        labels=data.labels[kept_rows].astype(np.int64),
        origin=data.origin[kept_rows],
        index=data.index[kept_rows],
    )
    rejected = np.flatnonzero(reasons != "")
    return CleanResult(
        kept=kept,
        rejected=take(data, rejected),
        reasons=reasons[rejected].astype(str),
        repaired={"images_with_fractional_pixels_rounded": int(fractional[kept_rows].sum())},
        unknown_labels={str(label): int(n) for label, n in zip(*np.unique(data.labels[outside], return_counts=True))},
    )


def _kept_images(images: np.ndarray | ImageFile, kept_rows: np.ndarray, max_pixel: int, scratch: Path | None):
    """The kept rows' images on the 0..255 scale, as uint8: in memory, or in a file in `scratch`."""
    shape = (len(kept_rows), *images.shape[1:])
    writer = None if scratch is None else ImageWriter(Path(scratch) / "kept.npy", shape)
    kept = np.empty(shape, dtype=np.uint8) if writer is None else None
    with writer or nullcontext():
        done = 0
        for start, block in blocks_of(images, _block_rows(images)):
            chosen = kept_rows[(kept_rows >= start) & (kept_rows < start + len(block))]
            scaled = _on_scale(block[chosen - start], max_pixel)[0]
            if writer is None:
                kept[done : done + len(chosen)] = scaled
            else:
                writer.write(scaled)
            done += len(chosen)
        return kept if writer is None else writer.close()
