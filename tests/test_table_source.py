"""Reading users' tables: only the needed columns, and every malformed file refused by name."""
import numpy as np
import pandas as pd
import pytest

from granular.config import DataConfig, TableConfig
from granular.modalities.tables.source import TableSourceError, read_table, row_origins, table_files

CONFIG = TableConfig(target="label", id="id", ancestors={"coarse": "category"})
FRAME = pd.DataFrame({
    "id": [7, 8, 9],
    "price": [1.5, np.nan, 3.0],
    "region": ["north", "south", None],
    "count": [1, 2, 3],
    "label": ["shirt", "boot", "shirt"],
    "category": ["top", "shoe", "top"],
    "unused": ["x", "y", "z"],
})


def _write(frame: pd.DataFrame, path, fmt: str):
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_labels_are_text_numeric_features_float32_and_rows_know_their_file_and_row(tmp_path, fmt):
    path = _write(FRAME, tmp_path / f"t.{fmt}", fmt)
    frame = read_table(path, fmt, CONFIG)
    assert set(frame.columns) == {"id", "price", "region", "count", "unused", "label", "category"}
    assert frame["price"].dtype == np.float32 and frame["count"].dtype == np.float32
    assert frame["id"].tolist() == ["7", "8", "9"] and frame["label"].tolist() == ["shirt", "boot", "shirt"]
    assert pd.isna(frame["region"].iloc[2]) and np.isnan(frame["price"].iloc[1])
    assert frame.index.tolist() == [0, 1, 2]
    files, rows = row_origins(frame)
    assert files.tolist() == [f"t.{fmt}"] * 3 and rows.tolist() == [1, 2, 3]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_only_the_configured_columns_are_read_and_overrides_decide_text(tmp_path, fmt):
    path = _write(FRAME, tmp_path / f"t.{fmt}", fmt)
    config = TableConfig(target="label", features=["price", "count"], types={"count": "categorical"})
    frame = read_table(path, fmt, config)
    assert list(frame.columns) == ["label", "price", "count"]
    assert frame["count"].tolist() == ["1", "2", "3"]  # a categorical override is read as text
    assert list(read_table(path, fmt, config, columns=["price"]).columns) == ["price"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_folder_is_read_file_by_file_in_name_order(tmp_path, fmt):
    _write(FRAME.iloc[2:], tmp_path / f"b.{fmt}", fmt)
    _write(FRAME.iloc[:2], tmp_path / f"a.{fmt}", fmt)
    (tmp_path / "notes.txt").write_text("not a table")
    assert [p.name for p in table_files(tmp_path, fmt)] == [f"a.{fmt}", f"b.{fmt}"]
    frame = read_table(tmp_path, fmt, CONFIG)
    assert frame.index.tolist() == [0, 1, 2] and frame["id"].tolist() == ["7", "8", "9"]
    files, rows = row_origins(frame.iloc[[2, 1]])  # a selection of rows still knows where it came from
    assert files.tolist() == [f"b.{fmt}", f"a.{fmt}"] and rows.tolist() == [1, 2]


def test_missing_path_and_empty_folder_are_named(tmp_path):
    with pytest.raises(TableSourceError, match=r"nothing\.csv: no such file or folder"):
        read_table(tmp_path / "nothing.csv", "csv", CONFIG)
    with pytest.raises(TableSourceError, match=r"holds no \*\.parquet file"):
        read_table(tmp_path, "parquet", CONFIG)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_empty_file_is_refused(tmp_path, fmt):
    (tmp_path / f"t.{fmt}").write_bytes(b"")
    with pytest.raises(TableSourceError, match=rf"t\.{fmt}: the file is empty \(0 bytes\)"):
        read_table(tmp_path / f"t.{fmt}", fmt, CONFIG)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_file_with_columns_but_no_rows_says_so(tmp_path, fmt):
    path = _write(FRAME.iloc[:0], tmp_path / f"t.{fmt}", fmt)
    with pytest.raises(TableSourceError, match=rf"t\.{fmt}: the file has .*but no (data )?rows"):
        read_table(path, fmt, CONFIG)


def test_bad_encoding_names_byte_line_encoding_and_setting(tmp_path):
    path = tmp_path / "t.csv"
    before = "id,price,label,category\n1,2,shirt,top\n2,3,caf".encode()
    path.write_bytes(before + b"\xe9,top\n")
    with pytest.raises(TableSourceError) as error:
        read_table(path, "csv", CONFIG)
    message = str(error.value)
    assert str(path) in message and f"byte {len(before)} (line 3)" in message
    assert "not valid utf-8" in message and "data.table.encoding" in message
    assert read_table(path, "csv", CONFIG.model_copy(update={"encoding": "latin-1"}))["label"].iloc[1] == "café"


def test_a_character_cut_off_at_the_end_of_the_file_is_named_by_its_byte(tmp_path):
    path = tmp_path / "t.csv"
    before = "id,price,label,category\n1,2,shirt,top\n2,3,shirt,t".encode()
    path.write_bytes(before + "é".encode()[:1])  # the first of the two bytes of é, then the end
    with pytest.raises(TableSourceError, match=rf"byte {len(before)} \(line 3\) is not valid utf-8"):
        read_table(path, "csv", CONFIG)


@pytest.mark.parametrize("delimiter, named", [(";", "';'"), ("\t", "tab"), ("|", "'|'")])
def test_a_wrong_delimiter_is_recognised_and_named(tmp_path, delimiter, named):
    path = tmp_path / "t.csv"
    FRAME.to_csv(path, index=False, sep=delimiter)
    with pytest.raises(TableSourceError) as error:
        read_table(path, "csv", CONFIG)
    message = str(error.value)
    assert "parses as the single column" in message and named in message and "data.table.delimiter" in message
    assert len(read_table(path, "csv", CONFIG.model_copy(update={"delimiter": delimiter}))) == 3


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_configured_column_missing_from_the_file_is_named_with_the_columns_found(tmp_path, fmt):
    path = _write(FRAME.drop(columns="category"), tmp_path / f"t.{fmt}", fmt)
    with pytest.raises(TableSourceError) as error:
        read_table(path, fmt, CONFIG)
    message = str(error.value)
    assert "'category' (ancestor coarse) not in the file" in message and "'unused'" in message


def test_files_of_a_folder_that_disagree_on_columns_are_both_named(tmp_path):
    _write(FRAME, tmp_path / "a.csv", "csv")
    _write(FRAME.drop(columns="unused"), tmp_path / "b.csv", "csv")
    expected = r"a\.csv and .*b\.csv do not have the same columns: only in the first \['unused'\]"
    with pytest.raises(TableSourceError, match=expected):
        read_table(tmp_path, "csv", CONFIG)


def test_a_truncated_parquet_file_is_refused(tmp_path):
    path = _write(FRAME, tmp_path / "t.parquet", "parquet")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(TableSourceError, match=r"t\.parquet: not a readable Parquet file"):
        read_table(path, "parquet", CONFIG)


def test_a_malformed_csv_is_named_with_the_row_at_fault(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('id,label,price\n1,shirt,2\n2,"boot,3\n3,hat,4\n')
    with pytest.raises(TableSourceError, match=r"t\.csv: not readable as CSV: .*EOF inside string starting at row 2"):
        read_table(path, "csv", TableConfig(target="label", id="id"))


def test_table_settings_belong_to_table_formats_only():
    with pytest.raises(ValueError, match="source.format csv reads a table: set data.table"):
        DataConfig.model_validate({"source": {"format": "csv"}})
    with pytest.raises(ValueError, match="data.table is set but source.format is idx"):
        DataConfig.model_validate({"table": {"target": "label"}})
    with pytest.raises(ValueError, match="label \\(the target\\) cannot be a feature"):
        TableConfig(target="label", features=["price", "label"])
    with pytest.raises(ValueError, match=r"feature_groups.coarse: \['size'\] are not among the features"):
        TableConfig(target="label", features=["price"], feature_groups={"coarse": ["size"]})


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_excluded_columns_are_never_read_as_features_and_must_exist(tmp_path, fmt):
    path = _write(FRAME, tmp_path / f"t.{fmt}", fmt)
    config = TableConfig(target="label", id="id", ancestors={"coarse": "category"}, exclude=["unused", "region"])
    assert set(read_table(path, fmt, config).columns) == {"id", "price", "count", "label", "category"}
    with pytest.raises(TableSourceError, match=r"'zip' \(excluded\) not in the file"):
        read_table(path, fmt, config.model_copy(update={"exclude": ["zip"]}))


def test_exclude_is_for_features_left_null_and_clashes_with_groups_by_name():
    with pytest.raises(ValueError, match="exclude: with features listed"):
        TableConfig(target="label", features=["price"], exclude=["region"])
    with pytest.raises(ValueError, match=r"feature_groups.where: \['region'\] are excluded"):
        TableConfig(target="label", exclude=["region"], feature_groups={"where": ["region"]})
