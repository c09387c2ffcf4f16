"""Cleaning: every rejection reason, repairs, rescaling, the report and subsampling."""
import numpy as np
import pytest

from granular.core.partition import TEST, TRAIN
from granular.modalities.images.clean import clean, subsample
from granular.modalities.images.sources import RawDataset

NUM_CLASSES = 3


def _dataset(images, labels, origin=None) -> RawDataset:
    images = np.asarray(images)
    n = len(images)
    origin = np.zeros(n, dtype=np.int8) if origin is None else np.asarray(origin, dtype=np.int8)
    index = np.zeros(n, dtype=np.int64)
    for code in (TRAIN, TEST):  # position within its official split
        index[origin == code] = np.arange((origin == code).sum())
    return RawDataset(images=images, labels=np.asarray(labels, dtype=np.int64), origin=origin, index=index)


def _distinct_images(n: int, dtype=np.float64) -> np.ndarray:
    """n different 2x2 images with pixels in 0..255."""
    return (np.arange(n * 4).reshape(n, 2, 2) % 256).astype(dtype)


def _with_row(row_image, label=0):
    images = _distinct_images(3)
    images[1] = row_image
    return _dataset(images, [0, label, 2])


def _reasons(result) -> list[str]:
    return result.reasons.tolist()


def test_valid_uint8_data_is_kept_unchanged():
    data = _dataset(_distinct_images(4, np.uint8), [0, 1, 2, 0])
    result = clean(data, NUM_CLASSES)
    assert len(result.rejected) == 0
    assert result.kept.images.dtype == np.uint8
    np.testing.assert_array_equal(result.kept.images, data.images)
    np.testing.assert_array_equal(result.kept.labels, data.labels)


def test_nan_row_is_rejected():
    result = clean(_with_row([[1, np.nan], [3, 4]]), NUM_CLASSES)
    assert _reasons(result) == ["non-finite pixel value (NaN or inf)"]
    assert result.rejected.index.tolist() == [1]
    np.testing.assert_array_equal(result.kept.index, [0, 2])


def test_inf_row_is_rejected():
    result = clean(_with_row([[1, 2], [-np.inf, 4]]), NUM_CLASSES)
    assert _reasons(result) == ["non-finite pixel value (NaN or inf)"]
    assert result.rejected.index.tolist() == [1]


@pytest.mark.parametrize("bad_pixel", [-1, 256])
def test_out_of_range_row_is_rejected(bad_pixel):
    result = clean(_with_row([[1, 2], [bad_pixel, 4]]), NUM_CLASSES)
    assert _reasons(result) == ["pixel value outside [0, 255]"]
    assert result.rejected.index.tolist() == [1]


@pytest.mark.parametrize("bad_label", [-1, NUM_CLASSES])
def test_unknown_label_is_rejected(bad_label):
    result = clean(_with_row([[1, 2], [3, 4]], label=bad_label), NUM_CLASSES)
    assert _reasons(result) == ["label outside the taxonomy's 0..2"]
    assert result.rejected.labels.tolist() == [bad_label]


def test_rejected_images_are_kept_as_they_came_in():
    data = _with_row([[1, np.nan], [3, 4]])
    result = clean(data, NUM_CLASSES)
    assert result.rejected.images.dtype == np.float64
    np.testing.assert_array_equal(result.rejected.images[0], data.images[1])


def test_identical_images_with_conflicting_labels_are_all_rejected():
    images = _distinct_images(4)
    images[2] = images[0]
    images[3] = images[0]
    result = clean(_dataset(images, [0, 1, 0, 2]), NUM_CLASSES)
    assert sorted(result.rejected.index.tolist()) == [0, 2, 3]
    assert set(_reasons(result)) == {"identical image carries conflicting labels"}
    assert result.kept.index.tolist() == [1]


def test_identical_images_with_the_same_label_are_kept():
    images = _distinct_images(3)
    images[2] = images[0]
    result = clean(_dataset(images, [1, 0, 1]), NUM_CLASSES)
    assert len(result.rejected) == 0
    assert result.kept.index.tolist() == [0, 1, 2]


def test_an_invalid_copy_does_not_make_a_valid_one_conflict():
    images = _distinct_images(3)
    images[2] = images[0]
    result = clean(_dataset(images, [1, 0, 7]), NUM_CLASSES)  # the copy has an unknown label
    assert _reasons(result) == ["label outside the taxonomy's 0..2"]
    assert result.kept.index.tolist() == [0, 1]


def test_first_reason_wins_for_a_row_with_several_faults():
    result = clean(_with_row([[np.nan, 300], [3, 4]], label=9), NUM_CLASSES)
    assert _reasons(result) == ["non-finite pixel value (NaN or inf)"]


def test_fractional_pixels_are_rounded_and_counted():
    images = _distinct_images(3)
    images[0, 0, 0] = 10.4
    images[2, 1, 1] = 10.6
    result = clean(_dataset(images, [0, 1, 2]), NUM_CLASSES)
    assert result.repaired == {"images_with_fractional_pixels_rounded": 2}
    assert result.kept.images[0, 0, 0] == 10
    assert result.kept.images[2, 1, 1] == 11
    assert len(result.rejected) == 0


def test_max_pixel_rescales_unit_floats_to_uint8():
    images = np.array([[[0.0, 0.2], [0.6, 1.0]]])
    result = clean(_dataset(images, [0]), NUM_CLASSES, max_pixel=1)
    assert result.kept.images.dtype == np.uint8
    np.testing.assert_array_equal(result.kept.images[0], [[0, 51], [153, 255]])


def test_max_pixel_is_the_upper_bound_for_rejection():
    images = np.array([[[0.0, 1.0], [0.5, 1.0]], [[0.0, 1.5], [0.5, 1.0]]])
    result = clean(_dataset(images, [0, 1]), NUM_CLASSES, max_pixel=1)
    assert _reasons(result) == ["pixel value outside [0, 1]"]
    assert result.rejected.labels.tolist() == [1]


def test_report_counts_examined_kept_rejected_and_reasons():
    images = _distinct_images(6)
    images[0, 0, 0] = np.nan
    images[1, 0, 0] = 999
    images[2, 0, 0] = 1.5
    data = _dataset(images, [0, 1, 2, 5, 0, 1], origin=[TRAIN, TRAIN, TRAIN, TRAIN, TEST, TEST])
    report = clean(data, NUM_CLASSES).report()
    assert report == {
        "examined": 6,
        "kept": 3,
        "kept_by_origin": {"train": 1, "test": 2},
        "rejected": 3,
        "rejected_by_reason": {
            "label outside the taxonomy's 0..2": 1,
            "non-finite pixel value (NaN or inf)": 1,
            "pixel value outside [0, 255]": 1,
        },
        "repaired": {"images_with_fractional_pixels_rounded": 1},
        "unknown_labels": {"5": 1},  # validation fails when a label the taxonomy lacks has many examples
    }


def test_clean_of_empty_dataset_keeps_nothing():
    # An empty source (e.g. an npz with 0-row arrays) should reach validation, which names the fault.
    empty = _dataset(np.zeros((0, 2, 2), dtype=np.uint8), [])
    result = clean(empty, NUM_CLASSES)
    assert len(result.kept) == 0 and len(result.rejected) == 0


def _split_data(n_train=10, n_test=6) -> RawDataset:
    origin = [TRAIN] * n_train + [TEST] * n_test
    return _dataset(_distinct_images(n_train + n_test), np.arange(n_train + n_test) % 3, origin=origin)


def test_subsample_limits_each_official_split():
    small = subsample(_split_data(), limit=4, seed=0)
    assert (small.origin == TRAIN).sum() == 4
    assert (small.origin == TEST).sum() == 4


def test_subsample_is_reproducible_by_seed():
    first = subsample(_split_data(), limit=4, seed=7)
    again = subsample(_split_data(), limit=4, seed=7)
    np.testing.assert_array_equal(first.index, again.index)
    np.testing.assert_array_equal(first.images, again.images)


def test_subsample_differs_with_another_seed():
    picks = {tuple(subsample(_split_data(), limit=4, seed=s).index.tolist()) for s in range(5)}
    assert len(picks) > 1


def test_subsample_keeps_rows_consistent_and_in_order():
    data = _split_data()
    small = subsample(data, limit=4, seed=3)
    for origin in (TRAIN, TEST):
        ids = small.index[small.origin == origin]
        assert list(ids) == sorted(ids)
    rows = small.index + 10 * small.origin  # row in data: test ids start after the 10 train rows
    np.testing.assert_array_equal(small.labels, data.labels[rows])
    np.testing.assert_array_equal(small.images, data.images[rows])


def test_subsample_without_limit_or_below_it_keeps_everything():
    data = _split_data()
    assert subsample(data, limit=None, seed=0) is data
    assert len(subsample(data, limit=100, seed=0)) == len(data)


def test_images_that_round_to_the_same_pixels_with_conflicting_labels_are_rejected():
    images = _distinct_images(3)
    images[1] = images[0]
    images[0, 0, 0] += 0.2
    images[1, 0, 0] += 0.3  # both round to the same uint8 image
    result = clean(_dataset(images, [0, 1, 2]), NUM_CLASSES)
    assert _reasons(result) == ["identical image carries conflicting labels"] * 2
    assert result.kept.index.tolist() == [2]


def test_unit_floats_on_the_grid_are_not_counted_as_repaired():
    images = np.array([[[0.0, 0.2], [0.6, 1.0]]])
    assert clean(_dataset(images, [0]), NUM_CLASSES, max_pixel=1).repaired == {
        "images_with_fractional_pixels_rounded": 0
    }
