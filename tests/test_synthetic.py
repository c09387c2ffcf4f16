"""The synthetic table generator: its columns, determinism, and the label process it promises."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from granular.config import load_config
from granular.demo.synthetic import BLOCK_ROWS, generate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> tuple[pd.DataFrame, dict]:
    path = tmp_path_factory.mktemp("synthetic") / "table.parquet"
    description = generate(30_000, path, seed=3)
    return pd.read_parquet(path), description


def test_the_table_has_the_described_columns_and_one_parent_per_fine_class(table):
    frame, description = table
    assert list(frame.columns) == description["columns"]
    assert frame["id"].tolist() == list(range(30_000))
    assert all(frame[column].dtype == np.float32 for column in description["numeric"])
    assert set(frame["region"]) == {f"region_{r}" for r in range(4)}
    assert set(frame["fine"]) == set(description["classes"]["fine"]) and len(description["classes"]["fine"]) == 12
    assert (frame["coarse"] == frame["fine"].map(description["hierarchy"])).all()
    for fine, coarse in description["hierarchy"].items():  # fine_C_F is a child of coarse_C
        assert fine.startswith(coarse.replace("coarse", "fine") + "_")


def test_only_the_last_numeric_column_has_gaps(table):
    frame, description = table
    missing = frame.isna().mean()
    assert description["missing_column"] == "x7"
    assert 0.03 < missing["x7"] < 0.07
    assert (missing.drop("x7") == 0).all()


def test_the_coarse_label_follows_the_direction_of_x0_x1(table):
    frame, _ = table
    angle = np.arctan2(frame["x1"], frame["x0"])  # coarse class c is centred on angle 2*pi*c/4
    nearest = np.round(angle / (np.pi / 2)).astype(int) % 4
    agreement = (frame["coarse"] == "coarse_" + nearest.astype(str)).mean()
    assert agreement > 0.6  # chance is about 0.25


def _x3_gap(frame: pd.DataFrame) -> pd.Series:
    """Per region: mean x3 of each coarse class's first fine class minus that of its last."""
    last = frame["fine"].str.endswith("_2")
    first = frame["fine"].str.endswith("_0")
    return frame[first].groupby("region")["x3"].mean() - frame[last].groupby("region")["x3"].mean()


def test_the_direction_of_x3_flips_between_even_and_odd_regions(table, tmp_path):
    gap = _x3_gap(table[0])
    assert gap["region_0"] > 0.3 and gap["region_2"] > 0.3
    assert gap["region_1"] < -0.3 and gap["region_3"] < -0.3

    generate(30_000, tmp_path / "flat.parquet", seed=3, segment_effect=0.0)
    flat = _x3_gap(pd.read_parquet(tmp_path / "flat.parquet"))
    assert flat.abs().max() < 0.1


def test_the_labels_are_noisy_and_the_noise_lowers_the_ceiling(table, tmp_path):
    _, description = table
    chance = {"fine": 1 / 12, "coarse": 1 / 4}
    for level, accuracy in description["bayes_accuracy"].items():
        assert chance[level] < accuracy < 0.95
    noisier = generate(30_000, tmp_path / "noisy.parquet", seed=3, label_noise=0.5)
    assert noisier["bayes_accuracy"]["fine"] < description["bayes_accuracy"]["fine"] - 0.1


def test_the_same_seed_gives_the_same_rows_whatever_the_chunks(tmp_path):
    rows = BLOCK_ROWS + 100
    generate(rows, tmp_path / "one.parquet", seed=5)
    generate(rows, tmp_path / "blocks.parquet", seed=5, chunk_rows=1)  # one block per chunk
    generate(rows, tmp_path / "other.parquet", seed=6)
    assert pq.ParquetFile(tmp_path / "one.parquet").metadata.num_row_groups == 1
    assert pq.ParquetFile(tmp_path / "blocks.parquet").metadata.num_row_groups == 2
    one, blocks = pq.read_table(tmp_path / "one.parquet"), pq.read_table(tmp_path / "blocks.parquet")
    assert one.equals(blocks)
    assert not one.equals(pq.read_table(tmp_path / "other.parquet"))


def test_csv_holds_the_same_table_as_parquet(tmp_path):
    generate(2_000, tmp_path / "table.parquet", seed=1)
    generate(2_000, tmp_path / "table.csv", seed=1)
    parquet = pq.read_table(tmp_path / "table.parquet")
    csv = pa_csv.read_csv(tmp_path / "table.csv", convert_options=pa_csv.ConvertOptions(column_types=parquet.schema))
    pd.testing.assert_frame_equal(csv.to_pandas(), parquet.to_pandas())


def test_sizes_and_formats_are_checked(tmp_path):
    with pytest.raises(ValueError, match="numeric must be at least 5, got 4"):
        generate(100, tmp_path / "t.parquet", numeric=4)
    with pytest.raises(ValueError, match="format 'json' is not one of"):
        generate(100, tmp_path / "t.json", fmt="json")
    with pytest.raises(ValueError, match=r"label_noise must be in \[0, 1\], got 2"):
        generate(100, tmp_path / "t.parquet", label_noise=2)
    assert not list(tmp_path.iterdir())


def test_the_command_line_writes_the_table_and_prints_its_description(tmp_path):
    out = tmp_path / "data" / "synthetic.csv"
    done = subprocess.run(
        [sys.executable, "-m", "granular.demo.synthetic", "--rows", "500", "--out", str(out), "--segments", "3"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )
    description = json.loads(done.stdout)
    assert description["format"] == "csv" and description["rows"] == 500
    assert pd.read_csv(out)["region"].nunique() == 3

    refused = subprocess.run(
        [sys.executable, "-m", "granular.demo.synthetic", "--rows", "0", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert refused.returncode == 2 and "rows must be at least 1, got 0" in refused.stderr


def test_the_example_params_name_columns_of_the_table(table):
    _, description = table
    config = load_config(ROOT / "examples" / "synthetic.yaml")
    settings = config.data.table
    assert settings.target == description["target"] and settings.id == description["id"]
    assert settings.ancestors == description["ancestors"]
    assert settings.feature_groups["coarse"] == description["coarse_features"]
    segmented = [view.segments.column for view in config.views.values() if view.segments]
    assert segmented == [description["segment_column"]]
