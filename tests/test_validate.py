"""Great Expectations validation (imports great_expectations once: a few seconds)."""
import numpy as np
import pytest

from granular.config import ValidateConfig
from granular.sources import TEST, TRAIN, RawDataset
from granular.validate import ValidationFailed, class_count_table, example_table, validate

NUM_CLASSES = 3
CONFIG = ValidateConfig(image_shape=(4, 4), min_per_class=2)


def _dataset(per_class_and_origin=2, shape=(4, 4), num_classes=NUM_CLASSES) -> RawDataset:
    """`per_class_and_origin` examples of every class in the train and the test split."""
    labels = np.tile(np.arange(num_classes), 2 * per_class_and_origin)
    n = len(labels)
    origin = np.repeat(np.array([TRAIN, TEST], dtype=np.int8), n // 2)
    index = np.concatenate([np.arange(n // 2), np.arange(n // 2)])
    images = np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)
    return RawDataset(images=images, labels=labels.astype(np.int64), origin=origin, index=index.astype(np.int64))


def _failure(data, config=CONFIG) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        validate(data, config, NUM_CLASSES)
    return caught.value


def test_clean_tiny_dataset_passes():
    report = validate(_dataset(), CONFIG, NUM_CLASSES)
    assert report["success"] is True
    assert report["failed"] == []
    assert report["evaluated"] == 10  # every expectation of both tables ran
    assert report["rows"] == {"examples": 12, "class_counts": 6}


def test_zero_rows_fail_the_row_count_expectation():
    failure = _failure(_dataset(per_class_and_origin=0))
    assert "expect_table_row_count_to_be_between" in str(failure)
    assert failure.report["success"] is False
    assert {"table": "examples", "expectation": "expect_table_row_count_to_be_between"}.items() <= \
        failure.report["failed"][0].items()


def test_too_few_examples_of_a_class_fail_min_per_class():
    failure = _failure(_dataset(per_class_and_origin=2), ValidateConfig(image_shape=(4, 4), min_per_class=3))
    assert str(failure).startswith("data validation failed (1 expectation(s)):")
    assert "class_counts: expect_column_values_to_be_between {'column': 'count', 'min_value': 3" in str(failure)
    assert [f["expectation"] for f in failure.report["failed"]] == ["expect_column_values_to_be_between"]


def test_wrong_image_shape_fails_naming_the_dimension():
    failure = _failure(_dataset(shape=(4, 5)))
    assert "examples: expect_column_values_to_be_in_set {'column': 'width', 'value_set': [4]}" in str(failure)
    assert len(failure.report["failed"]) == 1


def test_class_count_table_shows_a_missing_class_as_zero():
    data = _dataset()
    keep = data.labels != 2
    partial = RawDataset(data.images[keep], data.labels[keep], data.origin[keep], data.index[keep])
    table = class_count_table(partial, NUM_CLASSES)
    assert table.to_dict("records") == [
        {"origin": "train", "label": 0, "count": 2}, {"origin": "train", "label": 1, "count": 2},
        {"origin": "train", "label": 2, "count": 0}, {"origin": "test", "label": 0, "count": 2},
        {"origin": "test", "label": 1, "count": 2}, {"origin": "test", "label": 2, "count": 0},
    ]


def test_example_table_has_one_row_per_example_with_pixel_range():
    data = _dataset()
    table = example_table(data)
    assert list(table.columns) == ["origin", "index", "label", "height", "width", "pixel_min", "pixel_max"]
    assert len(table) == 12
    assert table["origin"].tolist() == ["train"] * 6 + ["test"] * 6
    assert table["pixel_max"].tolist() == data.images.reshape(12, -1).max(axis=1).tolist()
