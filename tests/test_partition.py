"""Partition: the seeded stratified split, pooling, and building a view per split."""
import numpy as np
import pytest

from granular.config import ImageView
from granular.core.partition import (
    SPLITS,
    TEST,
    TEST_SPLIT,
    TRAIN,
    TRAIN_SPLIT,
    VAL_SPLIT,
    PartitionError,
    assign_folds,
    assign_splits,
    check_every_class_in_every_split,
    pool,
)
from granular.core.taxonomy import parse_taxonomy
from granular.modalities.images.sources import RawDataset
from granular.modalities.images.views import build_view

TAXONOMY = parse_taxonomy({
    "levels": ["fine", "coarse"],
    "classes": [{"fine": "tee", "coarse": "top"}, {"fine": "coat", "coarse": "top"}, {"fine": "boot", "coarse": "shoe"}],
})


def _labels_and_origin(train_counts=(13, 27, 40), test_per_class=3):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(train_counts)] + [np.arange(3)] * test_per_class)
    origin = np.array([TRAIN] * sum(train_counts) + [TEST] * (3 * test_per_class), dtype=np.int8)
    return labels, origin


def _dataset(labels, origin, size=4) -> RawDataset:
    n = len(labels)
    images = np.arange(n * size * size, dtype=np.int64).reshape(n, size, size) % 256
    return RawDataset(images=images.astype(np.uint8), labels=np.asarray(labels, dtype=np.int64),
                      origin=np.asarray(origin, dtype=np.int8), index=np.arange(n, dtype=np.int64))


def test_same_seed_gives_the_identical_split():
    labels, origin = _labels_and_origin()
    np.testing.assert_array_equal(assign_splits(labels, origin, 0.2, seed=3), assign_splits(labels, origin, 0.2, seed=3))


def test_different_seed_gives_a_different_split():
    labels, origin = _labels_and_origin()
    assert not np.array_equal(assign_splits(labels, origin, 0.2, seed=3), assign_splits(labels, origin, 0.2, seed=4))


def test_official_test_examples_are_always_and_only_the_test_split():
    labels, origin = _labels_and_origin()
    for seed in range(3):
        split = assign_splits(labels, origin, 0.5, seed=seed)
        np.testing.assert_array_equal(split == TEST_SPLIT, origin == TEST)


def test_val_fraction_is_stratified_per_class():
    labels, origin = _labels_and_origin(train_counts=(13, 27, 40))
    split = assign_splits(labels, origin, 0.25, seed=0)
    for label, n_train in enumerate((13, 27, 40)):
        in_val = ((split == VAL_SPLIT) & (labels == label)).sum()
        assert abs(in_val - 0.25 * n_train) <= 1
        assert ((split == TRAIN_SPLIT) & (labels == label)).sum() == n_train - in_val


def test_folds_cover_validation_only_stratified_and_seeded():
    labels, origin = _labels_and_origin(train_counts=(40, 60, 80))
    split = assign_splits(labels, origin, 0.5, seed=0)
    fold = assign_folds(labels, split, folds=4, seed=0)
    assert (fold[split != VAL_SPLIT] == -1).all()
    assert set(fold[split == VAL_SPLIT].tolist()) == {0, 1, 2, 3}
    for label in range(3):  # each class spread evenly over the folds
        counts = np.bincount(fold[(split == VAL_SPLIT) & (labels == label)], minlength=4)
        assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(fold, assign_folds(labels, split, folds=4, seed=0))
    assert not np.array_equal(fold, assign_folds(labels, split, folds=4, seed=1))


def test_pool_averages_blocks_exactly():
    image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    pooled = pool(image, 2)
    # blocks {0,1,4,5}, {2,3,6,7}, {8,9,12,13}, {10,11,14,15}
    np.testing.assert_array_equal(pooled, [[[2.5, 4.5], [10.5, 12.5]]])
    assert pooled.dtype == np.float32


def test_pool_at_full_resolution_returns_the_images():
    images = np.arange(32, dtype=np.uint8).reshape(2, 4, 4)
    np.testing.assert_array_equal(pool(images, 4), images)


def test_pool_refuses_a_resolution_that_does_not_divide():
    with pytest.raises(PartitionError, match="resolution 3 does not divide images of 4x4"):
        pool(np.zeros((1, 4, 4)), 3)


def test_build_view_gives_the_rows_of_its_images_and_labels_at_its_level_per_split():
    labels, origin = _labels_and_origin()
    data = _dataset(labels, origin)
    split = assign_splits(labels, origin, 0.25, seed=0)
    view = build_view(data, split, TAXONOMY, ImageView(level="coarse", resolution=2))
    assert list(view) == list(SPLITS)
    for code, name in enumerate(SPLITS):
        rows = split == code
        np.testing.assert_array_equal(view[name]["rows"], np.flatnonzero(rows))
        assert "x" not in view[name]  # the images are seen as they are read, not copied
        np.testing.assert_array_equal(view[name]["y"], TAXONOMY.map_labels(labels[rows], "coarse"))
        np.testing.assert_array_equal(view[name]["index"], data.index[rows])
        np.testing.assert_array_equal(view[name]["origin"], data.origin[rows])


def test_views_of_different_levels_share_the_same_examples():
    labels, origin = _labels_and_origin()
    data = _dataset(labels, origin)
    split = assign_splits(labels, origin, 0.25, seed=0)
    fine = build_view(data, split, TAXONOMY, ImageView(level="fine", resolution=4))
    coarse = build_view(data, split, TAXONOMY, ImageView(level="coarse", resolution=2))
    for name in SPLITS:
        np.testing.assert_array_equal(fine[name]["index"], coarse[name]["index"])


def test_build_view_names_the_class_missing_from_a_split():
    labels, origin = _labels_and_origin(train_counts=(10, 10, 1))  # one 'boot' in train: none left for val
    split = assign_splits(labels, origin, 0.2, seed=0)
    data = _dataset(labels, origin)
    with pytest.raises(PartitionError, match=r"view fine-4: split 'val' has no example of class\(es\) \['boot'\]"):
        build_view(data, split, TAXONOMY, ImageView(level="fine", resolution=4))


def test_build_view_refuses_a_level_not_in_the_taxonomy():
    labels, origin = _labels_and_origin()
    split = assign_splits(labels, origin, 0.25, seed=0)
    with pytest.raises(PartitionError, match="view mid-4: level 'mid' is not in the taxonomy"):
        build_view(_dataset(labels, origin), split, TAXONOMY, ImageView(level="mid", resolution=4))


def test_every_class_of_every_level_in_every_split_passes_on_a_full_split():
    labels, origin = _labels_and_origin()
    check_every_class_in_every_split(labels, assign_splits(labels, origin, 0.25, seed=0), TAXONOMY)


def test_a_coarse_class_missing_from_a_split_is_named_with_its_level():
    # One 'boot', the whole 'shoe' group, in the official training set: val gets none.
    labels, origin = _labels_and_origin(train_counts=(10, 10, 1))
    split = assign_splits(labels, origin, 0.2, seed=0)
    with pytest.raises(PartitionError, match=r"level coarse: split 'val' has no example of class\(es\) \['shoe'\]"):
        check_every_class_in_every_split(labels, split, TAXONOMY)


def test_a_fine_class_missing_from_a_split_is_named_when_its_group_is_present():
    labels, origin = _labels_and_origin(train_counts=(10, 1, 10))  # one 'coat'; 'tee' keeps 'top' in val
    split = assign_splits(labels, origin, 0.2, seed=0)
    with pytest.raises(PartitionError, match=r"level fine: split 'val' has no example of class\(es\) \['coat'\]"):
        check_every_class_in_every_split(labels, split, TAXONOMY)
