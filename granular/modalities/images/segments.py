"""Data granularity of images: k-means clusters of coarsely pooled images, one expert per cluster.

The clusters are learned on the training split only, so validation and test examples are routed
exactly as unseen images will be when the model serves.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from granular.config import ClusterSegments
from granular.core.partition import SPLITS, PartitionError, pool
from granular.store.atomic import read_npz, write_npz

SEGMENTER_FILE = "segmenter.npz"  # in a segmented view's folder, and beside its experts


def segment_features(images: np.ndarray, resolution: int) -> np.ndarray:
    """What the clusters are found on: images pooled to resolution x resolution, scaled to 0..1."""
    return pool(images, resolution).reshape(len(images), -1).astype(np.float64) / 255.0


@dataclass(frozen=True)
class ClusterSegmenter:
    centroids: np.ndarray  # (segments, feature_resolution**2 x channels), pixels scaled to 0..1
    feature_resolution: int

    @property
    def count(self) -> int:
        return len(self.centroids)

    def assign(self, images: np.ndarray) -> np.ndarray:
        """The segment of each (N, H, W) or (N, H, W, C) image: its nearest centroid."""
        x = segment_features(images, self.feature_resolution)
        distances = (x**2).sum(1)[:, None] - 2 * x @ self.centroids.T + (self.centroids**2).sum(1)[None, :]
        return distances.argmin(axis=1).astype(np.int64)

    def save(self, path: Path) -> None:
        write_npz(path, centroids=self.centroids, feature_resolution=np.int64(self.feature_resolution))

    @classmethod
    def load(cls, path: Path) -> "ClusterSegmenter":
        arrays = read_npz(path)
        return cls(centroids=arrays["centroids"], feature_resolution=int(arrays["feature_resolution"]))


def fit_segmenter(train_images: np.ndarray, spec: ClusterSegments, seed: int) -> ClusterSegmenter:
    """k-means on the training images only; clusters numbered from the largest down, so the
    numbering does not depend on the initialisation's order."""
    from sklearn.cluster import KMeans  # imported here: only segmented views need it

    features = segment_features(train_images, spec.feature_resolution)
    if len(features) < spec.count:
        raise PartitionError(f"{len(features)} training examples cannot form {spec.count} segments")
    kmeans = KMeans(n_clusters=spec.count, n_init=4, random_state=seed).fit(features)
    by_size = np.argsort(-np.bincount(kmeans.labels_, minlength=spec.count), kind="stable")
    return ClusterSegmenter(kmeans.cluster_centers_[by_size], spec.feature_resolution)


def check_segment_sizes(segment: np.ndarray, split: np.ndarray, count: int, min_size: int, where: str) -> None:
    """Refuse segments too small to train an expert on: each needs `min_size` training examples
    and at least one validation example (its expert's training is measured there)."""
    for code, split_name in enumerate(SPLITS[:2]):
        sizes = np.bincount(segment[split == code], minlength=count)
        needed = min_size if split_name == "train" else 1
        small = {s: int(n) for s, n in enumerate(sizes) if n < needed}
        if small:
            raise PartitionError(
                f"{where}: segment(s) {small} have fewer than {needed} {split_name} examples "
                f"(sizes by segment: {sizes.tolist()}); use fewer segments or a lower segments.min_size"
            )
