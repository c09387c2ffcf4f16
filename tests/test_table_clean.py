"""Table schema and cleaning: each row fault set aside with its reason, file and row."""
import numpy as np
import pandas as pd
import pytest

from granular.config import TableConfig
from granular.core.taxonomy import TaxonomyError
from granular.modalities.tables.clean import clean_table, taxonomy_from_columns
from granular.modalities.tables.schema import infer_schema, schema_drift
from granular.modalities.tables.source import read_table, row_origins

CONFIG = TableConfig(target="label", id="id", ancestors={"coarse": "category"}, types={"price": "numeric"})

# One row per fault, in the order the faults are checked, then rows that are fine.
CSV = """id,price,region,label,category
1,2.5,north,shirt,top
2,1.0,south,,top
3,1.0,south,hat,top
4,abc,north,shirt,top
5,inf,north,shirt,top
6,1.0,north,shirt,shoe
7,1.0,north,shirt,
8,1.0,north,boot,shoe
8,2.0,north,shirt,top
9,1.0,north,boot,shoe
9,1.0,north,boot,shoe
10,,,boot,shoe
11,3.0,south,shirt,top
"""
FINE = {"fine": ["boot", "shirt"], "coarse": ["shoe", "top"]}


@pytest.fixture
def cleaned(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(CSV)
    frame = read_table(path, "csv", CONFIG)
    return clean_table(frame, CONFIG, infer_schema(frame, CONFIG), FINE)


def test_each_row_fault_is_set_aside_with_its_reason_file_and_row(cleaned):
    rejected = cleaned.rejected.set_index("row")
    assert (rejected["file"] == "t.csv").all()
    expected = {
        2: "column label: missing target",
        3: "column label: unknown label 'hat' (not a fine class)",
        4: "column price: 'abc' is not a number",
        5: "column price: inf is not a finite number",
        6: "column category: 'shoe' is not 'top', the parent of fine class 'shirt' in most rows",
        7: "column category: missing ancestor label",
        8: "column id: id '8' is carried by rows with different labels",
        9: "column id: id '8' is carried by rows with different labels",
        11: "column id: duplicate id '9' (same label; its first row is kept)",
    }
    assert rejected["reason"].to_dict() == expected
    assert rejected.loc[4, "price"] == "abc" and rejected.loc[6, "category"] == "shoe"  # original cells


def test_counts_add_up_and_reasons_are_counted_without_cell_values(cleaned):
    report = cleaned.report
    assert report["examined"] == 13 == report["kept"] + report["rejected"]
    assert report["rejected"] == sum(report["rejected_by_reason"].values()) == 9
    assert report["rejected_by_reason"]["column id: id carried with different labels"] == 2
    assert report["rejected_by_reason"]["column price: not a number"] == 1


def test_kept_rows_have_parsed_numbers_and_keep_their_missing_features(cleaned):
    kept = cleaned.kept
    assert row_origins(kept)[1].tolist() == [1, 10, 12, 13] and kept.index.tolist() == [0, 9, 11, 12]
    assert kept["price"].dtype == np.float32 and kept["price"].tolist()[:2] == [2.5, 1.0]
    assert np.isnan(kept["price"].iloc[2]) and pd.isna(kept["region"].iloc[2])  # imputed later, not rejected


def test_without_taxonomy_names_any_label_is_known():
    frame = pd.DataFrame({"label": ["hat", "shirt"], "price": [1.0, 2.0]})
    config = TableConfig(target="label")
    result = clean_table(frame, config, infer_schema(frame, config), None)
    assert result.report["kept"] == 2 and result.rejected.empty


def test_a_frame_not_read_from_files_names_rows_by_position():
    frame = pd.DataFrame({"label": ["a", None, "b"], "row": [1.0, 2.0, 3.0]})
    config = TableConfig(target="label")
    rejected = clean_table(frame, config, infer_schema(frame, config), None).rejected
    # the data column "row" keeps its name; the position moves aside to "_row"
    assert rejected[["_row", "row", "reason"]].values.tolist() == [[2, 2.0, "column label: missing target"]]


def test_the_taxonomy_of_the_columns_sorts_classes_by_name(cleaned):
    taxonomy = taxonomy_from_columns(cleaned.kept, CONFIG)
    assert taxonomy.levels == ("fine", "coarse")
    assert taxonomy.fine_names == ("boot", "shirt") and taxonomy.names["coarse"] == ("shoe", "top")
    assert taxonomy.parent["coarse"].tolist() == [0, 1]


def test_a_fine_class_with_two_parents_is_no_taxonomy():
    frame = pd.DataFrame({"label": ["a", "a", "b"], "category": ["x", "y", "x"]})
    config = TableConfig(target="label", ancestors={"coarse": "category"})
    with pytest.raises(TaxonomyError, match=r"\['a'\] have more than one parent in column 'category'"):
        taxonomy_from_columns(frame, config)


def test_a_middle_class_with_two_parents_is_no_taxonomy():
    frame = pd.DataFrame({"label": ["a", "b"], "mid": ["m", "m"], "top": ["x", "y"]})
    config = TableConfig(target="label", ancestors={"middle": "mid", "coarse": "top"})
    with pytest.raises(TaxonomyError, match="middle class 'm' has two parents at level 'coarse'"):
        taxonomy_from_columns(frame, config)


def test_the_schema_infers_types_applies_overrides_and_lists_categories():
    frame = pd.DataFrame({
        "label": ["a", "b", "a"], "price": [1.0, 2.0, 3.0], "size": [3, 1, 3],
        "region": ["south", None, "north"], "text_number": ["1", "x", "2"],
    })
    config = TableConfig(target="label", types={"size": "categorical", "text_number": "numeric"})
    schema = infer_schema(frame, config)
    assert schema["columns"] == {
        "price": {"type": "numeric", "dtype": "float64"},
        "size": {"type": "categorical", "categories": ["1", "3"]},
        "region": {"type": "categorical", "categories": ["north", "south"]},
        "text_number": {"type": "numeric", "dtype": "str"},
    }


def test_schema_drift_names_new_missing_retyped_columns_and_new_categories():
    reference = {"columns": {
        "price": {"type": "numeric", "dtype": "float32"},
        "size": {"type": "numeric", "dtype": "float32"},
        "region": {"type": "categorical", "categories": ["north"]},
    }}
    current = {"columns": {
        "size": {"type": "categorical", "categories": ["s"]},
        "region": {"type": "categorical", "categories": ["north", *"abcdefg"]},
        "colour": {"type": "categorical", "categories": ["red"]},
    }}
    assert schema_drift(reference, current) == [
        "new column 'colour' (not in the reference)",
        "missing column 'price' (in the reference)",
        "column 'size': type changed from numeric to categorical",
        "column 'region': 7 new categories: 'a', 'b', 'c', 'd', 'e' and 2 more",
    ]
    assert schema_drift(reference, reference) == []


def test_a_tie_between_parents_goes_to_the_first_by_name():
    frame = pd.DataFrame({"label": ["a", "a", "b"], "category": ["y", "x", "z"], "price": [1.0, 2.0, 3.0]})
    config = TableConfig(target="label", ancestors={"coarse": "category"})
    result = clean_table(frame, config, infer_schema(frame, config), None)
    assert result.kept["category"].tolist() == ["x", "z"]
    assert result.rejected["reason"].tolist() == ["column category: 'y' is not 'x', the parent of fine class 'a' in most rows"]


def test_labels_the_taxonomy_lacks_are_counted_for_validation(cleaned):
    assert cleaned.report["unknown_labels"] == {"hat": 1}  # validation fails a label with min_per_class rows
