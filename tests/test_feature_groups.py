"""Feature groups by name or glob (data.table.feature_groups): expanded against the table's
feature columns, checked against the headers before a run, read by each view."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from granular.config import Config, TableConfig, load_config
from granular.config.feature_groups import expand_group
from granular.demo.examples import export_example
from granular.modalities.tables.modality import view_columns
from granular.modalities.tables.source import TableSourceError, check_columns

ROOT = Path(__file__).resolve().parent.parent
HEADER = ["carat", "dim_x", "mfcc_1", "dim_y", "mfcc_2", "mfcc_10", "dim_zz", "Mfcc_3", "t[C]"]


def test_globs_expand_in_header_order_after_the_entries_before_them_each_column_once():
    assert expand_group("size", ["mfcc_1", "mfcc_*", "carat", "dim_?", "mfcc_2"], HEADER) == [
        "mfcc_1", "mfcc_2", "mfcc_10", "carat", "dim_x", "dim_y",
    ]
    assert expand_group("m", ["mfcc_?"], HEADER) == ["mfcc_1", "mfcc_2"]  # case-sensitive: not Mfcc_3
    assert expand_group("m", ["[Mm]fcc_[13]"], HEADER) == ["mfcc_1", "Mfcc_3"]
    assert expand_group("t", ["t[C]", "dim_x"], HEADER) == ["t[C]", "dim_x"]  # a name with `[` is that column


@pytest.mark.parametrize(("entry", "message"), [
    ("mfc_*", r"feature_groups\.g: pattern 'mfc_\*' matches no feature column \(did you mean 'mfcc_1', 'mfcc_2', 'mfcc_10'\?\)"),
    ("dim_x ", r"feature_groups\.g: 'dim_x ' names no feature column \(did you mean 'dim_x', 'dim_y', 'dim_zz'\?\)"),
    ("price*", r"feature_groups\.g: pattern 'price\*' matches no feature column; the feature columns are carat, "
               r"dim_x, mfcc_1, dim_y, mfcc_2, mfcc_10, dim_zz, Mfcc_3, t\[C\]$"),
])
def test_an_entry_that_names_or_matches_no_feature_column_is_refused_with_the_columns_like_it(entry, message):
    with pytest.raises(ValueError, match=message):
        expand_group("g", ["carat", entry], HEADER)


def test_the_header_check_expands_each_group_against_the_feature_columns_alone(tmp_path: Path):
    path = tmp_path / "table.csv"
    pd.DataFrame([[1, 2, 3, "a", 4]], columns=["mfcc_1", "mfcc_2", "note_x", "label", "mfcc_3"]).to_csv(path, index=False)
    check_columns(path, "csv", TableConfig(target="label", exclude=["note_x"], feature_groups={"m": ["mfcc_*"]}))
    for groups, message in [
        ({"notes": ["note_*"]}, "pattern 'note_\\*' matches no feature column"),  # excluded
        ({"labels": ["lab*"]}, "pattern 'lab\\*' matches no feature column"),  # the target
        ({"m": ["mfcc_*", "mfcc_4"]}, "'mfcc_4' names no feature column \\(did you mean 'mfcc_3', 'mfcc_2', 'mfcc_1'\\?\\)"),
    ]:
        config = TableConfig(target="label", exclude=["note_x"], feature_groups=groups)
        with pytest.raises(TableSourceError, match=f"{path}: feature_groups\\.{next(iter(groups))}: {message}"):
            check_columns(path, "csv", config)


def test_a_glob_among_listed_features_is_checked_when_the_settings_are_read():
    TableConfig(target="label", features=["mfcc_1", "mfcc_2", "carat"], feature_groups={"m": ["mfcc_*"]})
    with pytest.raises(ValueError, match=r"feature_groups\.m: \['dim_\*'\] are not among the features"):
        TableConfig(target="label", features=["mfcc_1", "carat"], feature_groups={"m": ["mfcc_*", "dim_*"]})


def test_a_view_reads_its_group_expanded_against_the_clean_tables_columns():
    config = Config.model_validate({
        "data": {"source": {"format": "csv", "path": "t.csv"},
                 "table": {"target": "label", "feature_groups": {"mfcc": ["mfcc_*"], "size": ["carat", "dim_?"]}}},
        "taxonomy": None, "distill": {"enabled": False},
        "views": {"fine-mfcc": {"level": "fine", "features": "mfcc"}, "fine-size-hgb": {
            "level": "fine", "features": "size", "learner": "hgb"}},
    })
    schema = {"columns": {name: {"type": "numeric"} for name in HEADER}}
    assert view_columns(config, config.views["fine-mfcc"], schema) == ["mfcc_1", "mfcc_2", "mfcc_10"]
    assert view_columns(config, config.views["fine-size-hgb"], schema) == ["carat", "dim_x", "dim_y"]


def test_globs_give_the_breast_cancer_examples_groups_column_for_column(tmp_path: Path):
    """The example lists each summary's ten columns by name; a glob says the same in one entry."""
    table = load_config(ROOT / "examples" / "breast_cancer.yaml").data.table
    header = list(pd.read_csv(export_example("breast_cancer", tmp_path / "bc.csv"), nrows=0).columns)
    features = [column for column in header if column not in (table.target, table.id)]
    for name, pattern in {"mean": "mean_*", "error": "*_error", "worst": "worst_*"}.items():
        assert expand_group(name, [pattern], features) == table.feature_groups[name]
