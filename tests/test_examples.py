"""The bundled example tables and their params files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from granular.config import load_config
from granular.demo.examples import EXAMPLES, column_name, export_example

ROOT = Path(__file__).resolve().parent.parent


def test_iris_exports_species_and_their_series(tmp_path):
    path = export_example("iris", tmp_path / "data" / "iris.csv")
    frame = pd.read_csv(path)
    assert list(frame.columns) == [
        "id", "sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm", "species", "series",
    ]
    assert len(frame) == 150 and frame["id"].is_unique
    assert frame["species"].value_counts().to_dict() == {"setosa": 50, "versicolor": 50, "virginica": 50}
    assert frame.groupby("species")["series"].unique().map(list).to_dict() == {
        "setosa": ["Tripetalae"], "versicolor": ["Laevigatae"], "virginica": ["Laevigatae"],
    }
    assert frame.iloc[0, 1:5].tolist() == [5.1, 3.5, 1.4, 0.2]  # Fisher's first flower


def test_breast_cancer_exports_thirty_measurements_and_a_diagnosis(tmp_path):
    frame = pd.read_csv(export_example("breast_cancer", tmp_path / "bc.csv"))
    assert frame.shape == (569, 32)
    assert frame.columns[0] == "id" and frame.columns[-1] == "diagnosis"
    assert frame["diagnosis"].value_counts().to_dict() == {"benign": 357, "malignant": 212}
    assert frame.drop(columns=["id", "diagnosis"]).notna().all().all()


def test_an_unknown_example_is_refused_with_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"no example table named 'wine'; examples are \['breast_cancer', 'diabetes', 'iris'\]"):
        export_example("wine", tmp_path / "wine.csv")
    assert column_name("mean concave points") == "mean_concave_points"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_params_file_is_valid_and_names_columns_of_its_table(name, tmp_path):
    config = load_config(ROOT / "examples" / f"{name}.yaml")
    assert config.data.source.path == Path("data") / f"{name}.csv"
    columns = set(pd.read_csv(export_example(name, tmp_path / f"{name}.csv")).columns)
    table = config.data.table
    named = {table.target, table.id, *table.ancestors.values()}
    named |= {column for group in table.feature_groups.values() for column in group}
    assert named <= columns, f"examples/{name}.yaml names {sorted(named - columns)}, not in the table"


def test_the_command_writes_the_table(tmp_path):
    out = tmp_path / "iris.csv"
    subprocess.run([sys.executable, "-m", "granular.demo.examples", "iris", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True)
    assert len(pd.read_csv(out)) == 150
