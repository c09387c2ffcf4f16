"""Great Expectations validation (imports great_expectations once: a few seconds)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from granular.config import ImageView, ValidateConfig, load_config
from granular.core.partition import TEST, TEST_SPLIT, TRAIN, TRAIN_SPLIT, VAL_SPLIT, PartitionError
from granular.core.taxonomy import parse_taxonomy
from granular.core.validation import (
    COLUMN_PRESENT,
    EXAMPLE_ROWS,
    ROWS_PRESENT,
    VALUES_FINITE,
    ValidationFailed,
    markdown_report,
    validate_tables,
)
from granular.modalities.images.segments import check_segment_sizes
from granular.modalities.images.sources import RawDataset
from granular.modalities.images.validate import ROW_IDS, class_count_table, example_table, validate
from granular.modalities.images.views import build_view
from granular.pipeline.validate import validate_step
from granular.store.atomic import write_npz
from granular.store.paths import ProjectPaths

REPO = Path(__file__).resolve().parents[1]
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


def _failure(data, config=CONFIG, source="") -> ValidationFailed:
    validation = validate(data, config, NUM_CLASSES, source=source)
    with pytest.raises(ValidationFailed) as caught:
        validation.raise_if_failed()
    return caught.value


def _failed(report: dict, expectation: str, column=None) -> dict:
    [found] = [f for f in report["failed"] if f["expectation"] == expectation and f.get("column") == column]
    return found


def test_clean_tiny_dataset_passes():
    validation = validate(_dataset(), CONFIG, NUM_CLASSES)
    validation.raise_if_failed()
    assert validation.report["success"] is True
    assert validation.report["failed"] == []
    assert validation.report["evaluated"] == 11  # every expectation of both tables ran
    assert validation.report["rows"] == {"examples": 12, "class_counts": 6}
    assert sorted(validation.results) == ["granular_class_counts", "granular_examples"]
    assert validation.results["granular_examples"]["statistics"]["successful_expectations"] == 10


def test_a_failure_names_the_file_column_expectation_and_example_rows():
    data = _dataset(per_class_and_origin=3)
    data.labels[[1, 4]] = [7, 9]  # train/1 and train/4
    failure = _failure(data, ValidateConfig(image_shape=(4, 4), min_per_class=1), "data/interim/clean.npz (cleaned from data/raw)")
    message = str(failure)
    assert message.startswith("data validation failed (1 expectation(s)) on data/interim/clean.npz (cleaned from data/raw):")
    assert "examples, column 'label': expect_column_values_to_be_in_set: value_set=0, 1, 2: 2 of 18 rows fail" in message
    assert "e.g. train/1: label=7; train/4: label=9" in message
    failed = _failed(failure.report, "expect_column_values_to_be_in_set", "label")
    assert failed["table"] == "examples"
    assert failed["examples"] == [{"row": "train/1", "label": 7}, {"row": "train/4", "label": 9}]
    json.dumps(failure.report)  # the report is written as JSON as it is


def test_at_most_five_example_rows_are_quoted():
    data = _dataset(per_class_and_origin=4)
    data.labels[:] = 5  # every row is wrong
    failed = _failed(_failure(data).report, "expect_column_values_to_be_in_set", "label")
    assert len(failed["examples"]) == EXAMPLE_ROWS
    assert "24 of 24 rows fail" in failed["details"]


def test_zero_rows_fail_explicitly_not_vacuously():
    failure = _failure(_dataset(per_class_and_origin=0))
    assert "examples: granular.table_has_rows: 0 rows: nothing to validate" in str(failure)
    assert "expect_table_row_count_to_be_between" in str(failure)  # GX's own check agrees
    assert failure.report["success"] is False
    assert _failed(failure.report, ROWS_PRESENT)["table"] == "examples"


def test_too_few_examples_of_a_class_fail_min_per_class():
    failure = _failure(_dataset(per_class_and_origin=2), ValidateConfig(image_shape=(4, 4), min_per_class=3))
    assert str(failure).startswith("data validation failed (1 expectation(s)):")
    assert "class_counts, column 'count': expect_column_values_to_be_between: min_value=3:" in str(failure)
    assert "e.g. origin=train label=0: count=2" in str(failure)
    assert [f["expectation"] for f in failure.report["failed"]] == ["expect_column_values_to_be_between"]


def test_wrong_image_shape_fails_naming_the_dimension():
    failure = _failure(_dataset(shape=(4, 5)))
    assert "examples, column 'width': expect_column_values_to_be_in_set: value_set=4: 12 of 12 rows fail" in str(failure)
    assert "e.g. train/0: width=5" in str(failure)
    assert len(failure.report["failed"]) == 1


def _expect(column: str, **bounds):
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnValuesToBeBetween(column=column, **bounds)


def test_a_missing_column_is_reported_as_missing_not_as_an_exception():
    frame = pd.DataFrame({"origin": ["train", "test"], "index": [0, 1], "width": [4, 4]})
    validation = validate_tables({"examples": frame}, {"examples": [_expect("pixel_max", max_value=255)]}, row_ids=ROW_IDS)
    failed = _failed(validation.report, COLUMN_PRESENT, "pixel_max")
    assert failed["details"] == "column 'pixel_max' is missing (columns: origin, index, width)"
    assert len(validation.report["failed"]) == 1  # GX's exception for the same column is not repeated
    with pytest.raises(ValidationFailed) as caught:
        validation.raise_if_failed()
    assert "does not exist" not in str(caught.value) and "index out of range" not in str(caught.value)


def test_infinite_values_fail_although_gx_not_null_passes_them():
    import great_expectations.expectations as gxe

    frame = pd.DataFrame({"origin": ["train"] * 3, "index": [7, 8, 9], "pixel_max": [3.0, np.inf, -np.inf]})
    validation = validate_tables(
        {"examples": frame}, {"examples": [gxe.ExpectColumnValuesToNotBeNull(column="pixel_max")]}, row_ids=ROW_IDS
    )
    assert validation.results["granular_examples"]["success"] is True  # GX's hole, measured
    failed = _failed(validation.report, VALUES_FINITE, "pixel_max")
    assert failed["details"].startswith("2 of 3 rows are NaN or ±inf")
    assert failed["examples"] == [{"row": "train/8", "pixel_max": np.inf}, {"row": "train/9", "pixel_max": -np.inf}]
    assert validation.report["success"] is False


def test_data_docs_are_built_for_the_suites(tmp_path: Path):
    data = _dataset()
    data.labels[0] = 8
    validation = validate(data, CONFIG, NUM_CLASSES, docs_dir=tmp_path / "docs")
    index = (tmp_path / "docs" / "index.html").read_text()
    assert "granular_examples" in index and "granular_class_counts" in index
    pages = sorted(p.relative_to(tmp_path / "docs").parts[0] for p in (tmp_path / "docs").rglob("*.html"))
    assert pages.count("validations") == 2 and pages.count("expectations") == 2
    assert not list((tmp_path / "docs").rglob("*.gif"))  # GX's images that no page links are left out
    assert validation.success is False


def test_markdown_report_lists_every_expectation_with_pass_or_fail():
    data = _dataset()
    data.labels[2] = 9
    validation = validate(data, ValidateConfig(image_shape=(4, 4), min_per_class=1), NUM_CLASSES, source="clean.npz")
    markdown = markdown_report({**validation.report, "suites": validation.results})
    assert "## Data validation FAILED" in markdown and "`clean.npz`" in markdown
    assert "| examples | label | `expect_column_values_to_be_in_set` | fail | value_set=0, 1, 2: 1 of 12 rows fail; e.g. train/2: label=9 |" in markdown
    assert "| examples | origin | `expect_column_values_to_be_in_set` | pass |" in markdown
    assert markdown.count("| pass |") == 10 and markdown.count("| fail |") == 1


def _project(tmp_path: Path, data: RawDataset) -> tuple:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "data").mkdir()
    shutil.copy(REPO / "data" / "taxonomy.yaml", tmp_path / "data" / "taxonomy.yaml")
    paths = ProjectPaths(tmp_path)
    write_npz(paths.clean, images=data.images, labels=data.labels, origin=data.origin, index=data.index)
    config = load_config(paths.params, ["validate.min_per_class=1"])
    return config, paths


def test_validate_step_keeps_results_and_data_docs_of_a_failure(tmp_path: Path):
    data = _dataset(shape=(28, 28), num_classes=10)
    data.labels[3] = 12  # train/3: outside the taxonomy's ten classes
    config, paths = _project(tmp_path, data)
    with pytest.raises(ValidationFailed, match=r"on data/interim/clean.npz \(cleaned from data/raw, idx files imported from"):
        validate_step(config, paths)
    result = json.loads((paths.validation_dir / "result.json").read_text())
    assert result["success"] is False
    # The same, readable offline (the Data Docs load their styles from a CDN): one Markdown table.
    offline = (paths.validation_dir / "validation.md").read_text()
    assert offline.startswith("## Data validation FAILED") and "| fail |" in offline and "{'" not in offline
    [label_check] = [
        r for r in result["suites"]["granular_examples"]["results"]
        if r["expectation_config"]["type"] == "expect_column_values_to_be_in_set"
        and r["expectation_config"]["kwargs"]["column"] == "label"
    ]
    assert label_check["success"] is False and label_check["result"]["unexpected_count"] == 1
    assert result["failed"][0]["examples"] == [{"row": "train/3", "label": 12}]
    assert "granular_examples" in (paths.validation_dir / "data_docs" / "index.html").read_text()
    assert json.loads(paths.validation_report.read_text())["success"] is False


def test_validate_step_replaces_the_results_of_the_previous_validation(tmp_path: Path):
    config, paths = _project(tmp_path, _dataset(shape=(28, 28), num_classes=10))
    paths.validation_dir.mkdir(parents=True)
    (paths.validation_dir / "stale.html").write_text("from an earlier run")
    assert validate_step(config, paths)["success"] is True
    assert json.loads((paths.validation_dir / "result.json").read_text())["success"] is True
    assert not (paths.validation_dir / "stale.html").exists()


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
    assert list(table.columns) == ["origin", "index", "label", "height", "width", "channels", "pixel_min", "pixel_max"]
    assert len(table) == 12
    assert table["origin"].tolist() == ["train"] * 6 + ["test"] * 6
    assert table["pixel_max"].tolist() == data.images.reshape(12, -1).max(axis=1).tolist()


# Data a view or a segment cannot be built from fails with its name, not downstream.
TAXONOMY = parse_taxonomy({
    "levels": ["fine", "coarse"],
    "classes": [{"fine": "tee", "coarse": "top"}, {"fine": "coat", "coarse": "top"}, {"fine": "boot", "coarse": "shoe"}],
})


def test_a_view_whose_split_has_no_examples_is_refused_naming_view_and_split():
    data = _dataset()
    split = np.where(data.origin == TEST, TEST_SPLIT, TRAIN_SPLIT)  # nothing in validation
    with pytest.raises(PartitionError, match=r"view fine-4: split\(s\) \['val'\] have 0 examples"):
        build_view(data, split, TAXONOMY, ImageView(level="fine", resolution=4))


def test_a_segment_with_no_examples_is_refused_naming_view_and_segment():
    segment = np.zeros(12, dtype=np.int64)  # segment 1 got nothing
    split = np.array([TRAIN_SPLIT] * 10 + [VAL_SPLIT] * 2)
    with pytest.raises(PartitionError, match=r"view fine-14-clusters2: segment\(s\) \{1: 0\} have fewer than 1 train"):
        check_segment_sizes(segment, split, count=2, min_size=1, where="view fine-14-clusters2")

