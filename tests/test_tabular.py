"""The pipeline on users' own tables: a real one that ships with scikit-learn, a synthetic one
whose segment effect is known, and faulty tables that must fail or be quarantined by name."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from flows.cli import main as granular_cli
from flows.pipeline import granular_pipeline
from granular.config import load_config
from granular.demo import synthetic
from granular.demo.examples import export_example
from granular.pipeline.clean import clean_step
from granular.pipeline.import_raw import import_raw_step
from granular.pipeline.split import split_step
from granular.pipeline.validate import validate_step
from granular.serving.predict import FusedClassifier
from granular.store.atomic import read_npz
from granular.store.paths import ProjectPaths
from test_serving import served_answer

pytestmark = [pytest.mark.usefixtures("prefect_test_server"), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]

# The synthetic table's fine label flips the sign of x3's effect between regions: the views read
# every feature but the region, so only the per-region experts can see the flip.
SYNTHETIC_PARAMS = {
    "data": {
        "source": {"format": "parquet", "path": "data/synthetic.parquet"},
        "table": {
            "target": "fine", "id": "id", "ancestors": {"coarse": "coarse"}, "test_fraction": 0.3,
            "feature_groups": {
                "coarse": ["x0", "x1", "region"],
                "numeric": ["x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "channel"],
            },
        },
    },
    "taxonomy": None,
    "validate": {"min_per_class": 20},
    "views": {
        "fine-numeric": {"level": "fine", "features": "numeric"},
        "coarse-coarse": {"level": "coarse", "features": "coarse"},
        "fine-numeric-region": {
            "level": "fine", "features": "numeric", "segments": {"by": "column", "column": "region", "min_size": 300},
        },
    },
    "train": {"epochs": 6, "batch_size": 256, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.0001,
              "label_smoothing": 0.05, "width": 64, "dropout": 0.1},
    "fusion": {"strategy": "gating"},
    "distill": {"enabled": False},
}


@pytest.fixture
def iris_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "data").mkdir()
    export_example("iris", tmp_path / "data" / "iris.csv")
    shutil.copy(REPO / "examples" / "iris.yaml", tmp_path / "params.yaml")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_a_real_table_runs_end_to_end_next_to_the_boosted_trees_baseline(
    iris_project: Path, capsys: pytest.CaptureFixture
):
    assert granular_cli(["run", "--root", str(iris_project), "--set", "train.epochs=10"]) == 0

    metrics = json.loads((iris_project / "data/evaluation/metrics.json").read_text())
    views = ["fine-all", "fine-sepal", "fine-petal", "series-all"]
    assert set(metrics["test"]) == set(views) | {"fused", "hgb", "majority"}
    assert all(scores["n"] == 30 for scores in metrics["test"].values())  # 20% of 150 rows
    assert metrics["majority"] == {"model": "majority"}  # one species for every row: a third right
    assert metrics["test"]["majority"]["accuracy"] == pytest.approx(1 / 3)
    assert metrics["test"]["majority"]["balanced_accuracy"] == pytest.approx(1 / 3)
    assert metrics["baseline"] == {"model": "hgb"}  # its fit time is a figure of the machine:
    assert json.loads((iris_project / "data/evaluation/latency.json").read_text())["hgb"]["train_seconds"] > 0
    assert metrics["test"]["fused"]["accuracy"] > 0.8  # three species, far above a third
    assert "series_accuracy" in metrics["test"]["fused"]  # implied by the fine prediction
    printed = capsys.readouterr().out
    assert "\nhgb " in printed and "\nfused " in printed
    assert "quarantined: 0 of 150 examples" in printed
    taxonomy = yaml.safe_load((iris_project / "data/interim/taxonomy.yaml").read_text())
    assert taxonomy["levels"] == ["fine", "series"]
    assert (iris_project / "data/interim/validation/data_docs/index.html").is_file()
    assert set(json.loads((iris_project / "data/schema.json").read_text())["columns"]) == {
        "sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm",
    }

    # The served model takes rows as they are in the CSV (extra columns ignored) and answers
    # as the bundle does.
    rows = pd.read_csv(iris_project / "data/iris.csv").head(6)
    model_name = load_config(iris_project / "params.yaml").serving.model_name  # what the run registered under
    client = MlflowClient(f"sqlite:///{iris_project / 'mlruns.db'}")
    version = client.get_model_version(model_name, "1")
    served = mlflow.pyfunc.load_model(client.get_model_version_download_uri(model_name, "1"))  # its Logged Model's files
    answer = served.predict(rows)
    bundle = FusedClassifier.load(iris_project / "data/fused")
    assert answer["label"].tolist() == bundle.predict_proba(rows[bundle.inputs.columns]).argmax(1).tolist()
    assert set(answer["fine"]) <= {"setosa", "versicolor", "virginica"}
    assert set(answer["series"]) <= {"Tripetalae", "Laevigatae"}
    with pytest.raises(Exception, match="petal_width_cm"):
        served.predict(rows.drop(columns=["petal_width_cm"]))
    # Whole numbers, as pandas.read_csv reads them (int64 columns), score too, in Python and over
    # HTTP from the real `mlflow models serve`.
    whole = rows.assign(**{column: rows[column].round().astype("int64") for column in bundle.inputs.columns})
    expected = bundle.predict_proba(whole[bundle.inputs.columns].astype("float64")).argmax(1).tolist()
    assert served.predict(whole)["label"].tolist() == expected
    over_http = served_answer(
        f"models:/{model_name}/1", f"sqlite:///{iris_project / 'mlruns.db'}",
        {"dataframe_split": whole.to_dict(orient="split")}, iris_project / "server.log",
    )
    assert [row["label"] for row in over_http["predictions"]] == expected
    # `granular predict` on a file of rows: one answer per data line.
    output = iris_project / "predictions.csv"
    assert granular_cli([
        "predict", "--root", str(iris_project), "--model", f"models:/{model_name}/1",
        "--input", str(iris_project / "data/iris.csv"), "--output", str(output),
    ]) == 0
    predicted = pd.read_csv(output)
    assert predicted["row"].tolist() == list(range(1, 151))
    assert predicted["id"].tolist() == pd.read_csv(iris_project / "data/iris.csv")["id"].tolist()  # data.table.id
    every_class = ["proba_setosa", "proba_versicolor", "proba_virginica"]
    assert predicted[every_class].sum(axis=1).round(4).eq(1).all()
    assert predicted["label"].head(6).tolist() == answer["label"].tolist()


def test_on_a_synthetic_table_the_fusion_beats_every_view_where_the_segments_matter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "data").mkdir()
    synthetic.generate(10_000, tmp_path / "data" / "synthetic.parquet", seed=0, segment_effect=3.0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(SYNTHETIC_PARAMS))
    result = granular_pipeline(root=str(tmp_path))

    test = result["metrics"]["test"]
    # The segment effect is real: each region's expert beats the global model on its rows...
    for region, scores in result["metrics"]["segments"]["fine-numeric-region"].items():
        assert scores["accuracy"] > scores["global_accuracy"], region
    # ...and the fused fine label beats every single view's. (The coarse view answers another
    # question; its accuracy is compared with the coarse accuracy the fused label implies.)
    for view, spec in SYNTHETIC_PARAMS["views"].items():
        if spec["level"] == "fine":
            assert test["fused"]["accuracy"] > test[view]["accuracy"], view
    assert {"coarse_accuracy", "hierarchical_f1"} <= set(test["fused"])
    assert result["registry"]["version"] == "1"


def _steps_until_validation(root: Path) -> tuple[ProjectPaths, dict]:
    paths = ProjectPaths(root)
    config = load_config(paths.params)
    import_raw_step(config, paths)
    report = clean_step(config, paths)
    validate_step(config, paths)
    return paths, report


def _write_table_project(root: Path, frame: pd.DataFrame) -> None:
    (root / "data").mkdir(exist_ok=True)
    frame.to_csv(root / "data" / "table.csv", index=False)
    params = {
        "data": {"source": {"format": "csv", "path": "data/table.csv"},
                 "table": {"target": "label", "id": "id", "types": {"size": "numeric"}}},
        "taxonomy": None,
        "validate": {"min_per_class": 1},
        "views": {"fine-all": {"level": "fine", "features": "all"}},
        "train": {"epochs": 4, "batch_size": 128, "lr": 0.01, "dropout": 0.1},
        "distill": {"enabled": False},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def test_faulty_rows_are_quarantined_with_their_reasons_and_the_rest_validates(tmp_path: Path):
    frame = pd.DataFrame({
        "id": [1, 2, 3, 4, 5, 6, 7, 7],
        "size": ["1.5", "2", "abc", "4", "inf", "6", "7", "7"],
        "colour": ["red", "blue", "red", "blue", "red", "blue", "red", "red"],
        "label": ["a", "b", "a", None, "a", "b", "a", "b"],
    })
    _write_table_project(tmp_path, frame)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["validate"]["max_quarantined_share"] = 1.0  # five of the eight rows are faulty, on purpose
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    paths, report = _steps_until_validation(tmp_path)

    rejected = pd.read_csv(paths.quarantine_csv)
    assert report["examined"] == 8 and report["kept"] + report["rejected"] == 8
    reasons = dict(zip(rejected["id"], rejected["reason"]))
    assert "size" in reasons[3] and "not a number" in reasons[3]
    assert "size" in reasons[5] and "inf" in reasons[5]
    assert "label" in reasons[4]  # no target
    assert set(rejected["id"]) >= {3, 4, 5, 7}  # id 7 carries two labels: every copy is set aside
    assert len(rejected[rejected["id"] == 7]) == 2


def test_schema_drift_is_reported_by_validation(tmp_path: Path):
    frame = pd.DataFrame({
        "id": range(6), "size": [1.0, 2, 3, 4, 5, 6], "colour": ["red", "blue"] * 3, "label": ["a", "b"] * 3,
    })
    _write_table_project(tmp_path, frame)
    _steps_until_validation(tmp_path)  # the first table validated sets the accepted schema
    drifted = frame.assign(colour=["red", "blue", "green"] * 2, shape=["round"] * 6)
    drifted.to_csv(tmp_path / "data" / "table.csv", index=False)
    paths, _ = _steps_until_validation(tmp_path)

    drift = json.loads(paths.validation_report.read_text())["schema_drift"]
    assert any("new column 'shape'" in line for line in drift)
    assert any("'colour'" in line and "'green'" in line for line in drift)


def test_a_renamed_column_changes_the_views_files_so_what_trains_on_them_retrains(iris_project: Path):
    """A table's view files point into the clean table; they also record what the training reads
    of it, so renaming a column between two runs recomputes the view's training (DVC and the
    task cache key it on the view's files), where it used to come back from the cache."""
    from granular.pipeline.split import split_step
    from granular.pipeline.view import view_step
    from tasks.caching import path_digest

    paths = ProjectPaths(iris_project)
    overrides = ["data.table.feature_groups={}", "views={fine-all: {level: fine, features: all}}"]

    def view_digest() -> str:
        config = load_config(paths.params, overrides)
        for step in (import_raw_step, clean_step, validate_step, split_step):
            step(config, paths)
        view_step(config, paths, "fine-all")
        return path_digest(paths.view_dir("fine-all"))

    first = view_digest()
    assert view_digest() == first  # nothing changed: the same files
    table = pd.read_csv(iris_project / "data/iris.csv")
    table.rename(columns={"petal_width_cm": "petal_width"}).to_csv(iris_project / "data/iris.csv", index=False)
    assert view_digest() != first


@pytest.mark.parametrize(("label", "why"), [
    ([f"{100 + 7.5 * i:.1f}" for i in range(60)], "numbers with a fraction"),
    ([str(1000 + i) for i in range(60)], "60 distinct whole numbers"),
])
def test_a_numeric_target_is_refused_as_regression_before_anything_trains(tmp_path: Path, label, why):
    from granular.modalities.tables.modality import TableStepError

    frame = pd.DataFrame({"id": range(60), "size": range(60), "colour": ["red", "blue"] * 30, "label": label})
    _write_table_project(tmp_path, frame)
    with pytest.raises(TableStepError, match=rf"column 'label' holds {why}, a quantity to predict \(regression\)"):
        _steps_until_validation(tmp_path)
    assert not (tmp_path / "data/interim/clean.npz").exists()


def test_whole_numbers_as_class_labels_stay_classes(tmp_path: Path):
    frame = pd.DataFrame({"id": range(60), "size": range(60), "colour": ["red", "blue"] * 30, "label": ["0", "1", "2"] * 20})
    _write_table_project(tmp_path, frame)
    _, report = _steps_until_validation(tmp_path)
    assert report["kept"] == 60


def test_a_small_table_validates_with_the_default_least_rows_per_class(tmp_path: Path):
    """A class of 30 rows is a class; one of 6 is too few to be trained, validated and tested."""
    frame = pd.DataFrame({"id": range(66), "size": range(66), "label": ["a", "b"] * 30 + ["c"] * 6})
    _write_table_project(tmp_path, frame)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    del params["validate"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(Exception, match=r"(?s)class_counts.*: min_value=10: 1 of 3 rows fail.*label=c: count=6"):
        _steps_until_validation(tmp_path)
    (tmp_path / "data" / "table.csv").write_text(frame[frame.label != "c"].to_csv(index=False))
    _, report = _steps_until_validation(tmp_path)
    assert report["kept"] == 60


def test_a_given_split_column_decides_each_rows_split_and_a_bad_value_is_quarantined(tmp_path: Path):
    rows = 90
    frame = pd.DataFrame({
        "id": range(rows), "size": range(rows), "label": ["a", "b", "c"] * 30,
        "part": ["train"] * 54 + ["Validation"] * 15 + [" TEST "] * 18 + ["holdout", None, "val"],
    })
    _write_table_project(tmp_path, frame)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["data"]["table"]["split"] = "part"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    paths, report = _steps_until_validation(tmp_path)
    rejected = pd.read_csv(paths.quarantine / "rejected.csv")
    assert report["kept"] == 88 and len(rejected) == 2
    assert set(rejected["reason"]) == {"column part: 'holdout' is not a split (train, val or test)",
                                       "column part: missing split"}
    split_step(load_config(paths.params), paths)
    splits = read_npz(paths.splits)
    kept = frame.drop(index=[87, 88]).reset_index(drop=True)
    expected = kept["part"].str.strip().str.lower().map({"train": 0, "validation": 1, "val": 1, "test": 2})
    assert splits["split"].tolist() == expected.tolist()
    assert "part" not in json.loads(paths.table_schema.read_text())["columns"]  # a role, not a feature


def test_a_failed_run_says_why_in_one_line_and_prints_the_traceback_once_with_debug(iris_project: Path):
    from prefect.settings import PREFECT_API_URL

    params = yaml.safe_load((iris_project / "params.yaml").read_text())
    params["validate"] = {"min_per_class": 1000}  # 50 flowers a species: validation fails, in a task
    (iris_project / "params.yaml").write_text(yaml.safe_dump(params))
    environ = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}  # this session's test server

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "flows.cli", "run", "--root", str(iris_project), *args],
            cwd=REPO, env=environ, capture_output=True, text=True, timeout=600,
        )

    quiet = run()
    assert quiet.returncode == 1
    output = quiet.stdout + quiet.stderr
    assert "Traceback" not in output, output[-3000:]
    assert "\ngranular: ValidationFailed: data validation failed (1 expectation(s))" in output
    assert output.strip().splitlines()[-1] == "granular: --debug prints the traceback"
    debug = run("--debug")
    assert debug.returncode == 1
    assert (debug.stdout + debug.stderr).count("Traceback (most recent call last)") == 1
