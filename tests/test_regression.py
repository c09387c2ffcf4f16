"""A regression target: a table's quantity predicted as a number by views of the value and of its
bins, stacked, scored by RMSE, MAE and R² with intervals next to boosted regression trees and
the mean, gated on R², and served as a number."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from flows.cli import main as granular_cli
from granular.config import Config, ConfigError, load_config
from granular.core import evaluate, value_fusion
from granular.core.bins import bin_names, bins_taxonomy, fine_bins
from granular.demo.examples import export_example
from granular.pipeline.clean import clean_step
from granular.pipeline.import_raw import import_raw_step
from granular.serving.predict import load_fused
from test_promotion import GATE
from test_serving import served_answer

REPO = Path(__file__).resolve().parents[1]


def _regression_config(**table) -> dict:
    return {
        "data": {"source": {"format": "csv", "path": "data/table.csv"},
                 "table": {"target": "price", "task": "regression", **table}},
        "taxonomy": None,
        "views": {"fine-all": {"level": "fine", "features": "all"}},
        "distill": {"enabled": False},
    }


def test_bins_are_checked_when_the_settings_are_read():
    Config.model_validate(_regression_config(bins={"band": [100, 200, 300], "tier": [200]}))
    for bins, why in [
        ({"band": [200, 100]}, "increasing order"),
        ({"band": [100, 200], "tier": [150]}, r"cuts \[150.0\] are not cuts of the finer level"),
        ({"fine": [100]}, "`fine` is the target itself"),
    ]:
        with pytest.raises(ValueError, match=why):
            Config.model_validate(_regression_config(bins=bins))
    classification = _regression_config(bins={"band": [100]})
    classification["data"]["table"]["task"] = "classification"
    with pytest.raises(ValueError, match="set task: regression"):
        Config.model_validate(classification)


@pytest.mark.parametrize(("setting", "message"), [
    ({"fusion": {"threshold_metric": "f1"}}, "fusion.threshold_metric: not for a regression target"),
    ({"train": {"class_weight": "balanced"}}, "train.class_weight: not for a regression target"),
    ({"fusion": {"strategy": "product"}}, "fused by stacking or best_view"),
    ({"promotion": {"metric": "accuracy"}}, "a regression is gated on r2"),
    ({"views": {"coarse-all": {"level": "coarse", "features": "all"}}}, "level 'coarse' is not fine"),
])
def test_what_only_a_classifier_has_is_refused_for_a_regression(setting, message):
    document = _regression_config() | setting
    with pytest.raises(ValueError, match=message):
        Config.model_validate(document)


def test_bins_make_a_taxonomy_whose_coarser_bins_hold_whole_finer_ones():
    taxonomy = bins_taxonomy({"band": [100, 200, 300], "tier": [200]})
    assert taxonomy.levels == ("fine", "band", "tier")
    assert taxonomy.names["band"] == ("below 100", "100 to 200", "200 to 300", "300 and above")
    assert taxonomy.map_labels(np.arange(4), "tier").tolist() == [0, 0, 1, 1]
    # A bin runs from its cut up to, not including, the next.
    assert fine_bins(np.array([50, 100, 199.9, 200, 1e6]), {"band": [100, 200, 300]}).tolist() == [0, 1, 1, 2, 3]
    assert bin_names([0.5]) == ("below 0.5", "0.5 and above")
    assert bins_taxonomy({}).names == {"fine": ("all",)}  # no bins: one stratum


def test_stacking_weighs_the_informative_view_and_auto_picks_by_held_out_error():
    rng = np.random.default_rng(0)
    y = rng.normal(50, 10, 400)
    values = {"good": y + rng.normal(0, 2, 400), "noise": rng.normal(50, 10, 400), "half": 0.5 * y + 25}
    record = value_fusion.fit_stacking(values, y)
    assert all(weight >= 0 for weight in record["weights"].values())
    assert record["weights"]["noise"] < 0.05
    fused = value_fusion.predict(record, values)
    assert np.sqrt(np.mean((fused - y) ** 2)) < np.sqrt(np.mean((values["good"] - y) ** 2))
    folds = np.arange(400) % 5
    chosen = value_fusion.choose("auto", values, y, folds)
    scores = chosen["selection"]["scores"]
    assert set(scores) == {"stacking", "best_view"}
    assert chosen["strategy"] == min(scores, key=scores.get)
    assert value_fusion.fit_best_view(values, y)["weights"] == {"good": 1.0}
    with pytest.raises(ValueError, match="stacking, best_view or auto, not .gating."):
        value_fusion.choose("gating", values, y, folds)


def test_regression_scores_and_their_intervals():
    rng = np.random.default_rng(1)
    y = rng.normal(1e5, 2e4, 500)  # large values: the resampled sums must stay exact enough
    resamples = evaluate.resample_counts(len(y))
    exact = evaluate.resampled_regression(resamples, y, y)
    assert np.allclose(exact["r2"], 1) and np.allclose(exact["rmse"], 0, atol=1e-6)
    shifted = evaluate.resampled_regression(resamples, y, y + 1000)
    assert np.allclose(shifted["rmse"], 1000, rtol=1e-4) and np.allclose(shifted["mae"], 1000, rtol=1e-4)
    noisy = y + rng.normal(0, 1e4, 500)
    scores = evaluate.regression_metrics(y, noisy)
    samples = evaluate.resampled_regression(resamples, y, noisy)
    for metric in ("rmse", "mae", "r2"):
        low, high = evaluate.percentile_interval(samples[metric])
        assert low < scores[metric] < high
    assert 0.6 < scores["r2"] < 0.9  # noise of half the spread: R² about 1 - 1/4
    mean = evaluate.regression_metrics(y, np.full(500, y.mean()))
    assert mean["r2"] == pytest.approx(0, abs=1e-12)


def test_a_network_learns_a_quantity_in_its_own_units():
    from granular.nn import predict, train
    from granular.nn.device import select_runtime
    from granular.nn.inputs import TableArrays
    from granular.nn.objective import Values

    rng = np.random.default_rng(2)
    x = rng.normal(size=(1200, 3)).astype(np.float32)
    y = 1000 + 30 * x[:, 0] - 20 * x[:, 1] + rng.normal(0, 3, 1200)
    table = TableArrays(numeric=x, codes=np.zeros((1200, 0), dtype=np.int64), cardinalities=())
    config = load_config(REPO / "params.yaml").train.model_copy(update={
        "epochs": 15, "batch_size": 64, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.0, "width": 32,
        "depth": 1, "stages": [], "heads": {}, "label_smoothing": 0.0, "dropout": 0.1,
    })
    network = train.fit(table[:1000], y[:1000], table[1000:], y[1000:], 1, config, select_runtime(1), objective=Values())
    predicted = predict.predict_proba(network, table[1000:], select_runtime(1))
    assert predicted.shape == (200, 1)
    rmse = float(np.sqrt(np.mean((predicted[:, 0] - y[1000:]) ** 2)))
    assert rmse < 0.25 * y.std()  # far below the spread (36): it learned the value, in its units
    assert network.history[-1]["val_rmse"] == pytest.approx(rmse, rel=1e-3)


def test_a_target_that_is_not_a_number_is_quarantined_with_its_reason(tmp_path: Path):
    (tmp_path / "data").mkdir()
    frame = pd.DataFrame({"size": range(40), "colour": ["red", "blue"] * 20, "price": [str(10.5 * i) for i in range(40)]})
    frame.loc[3, "price"] = "unknown"
    frame.loc[7, "price"] = None
    frame.to_csv(tmp_path / "data/table.csv", index=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_regression_config(bins={"band": [200]})))
    from granular.store.paths import ProjectPaths

    paths = ProjectPaths(tmp_path)
    config = load_config(paths.params)
    import_raw_step(config, paths)
    report = clean_step(config, paths)
    assert report["kept"] == 38
    rejected = pd.read_csv(tmp_path / "data/quarantine/rejected.csv")
    assert rejected["reason"].tolist() == ["column price: 'unknown' is not a number", "column price: missing target"]
    taxonomy = yaml.safe_load((tmp_path / "data/interim/taxonomy.yaml").read_text())
    assert taxonomy["levels"] == ["fine", "band"]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_test_server")
def test_a_real_regression_table_runs_end_to_end_and_serves_a_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    (tmp_path / "data").mkdir()
    export_example("diabetes", tmp_path / "data/diabetes.csv")
    params = yaml.safe_load((REPO / "examples/diabetes.yaml").read_text())
    params["data"]["table"]["types"] = {"sex": "categorical"}  # a segment column: an expert per sex
    params["views"]["fine-all-sex"] = {
        "level": "fine", "features": "all", "segments": {"by": "column", "column": "sex", "min_size": 50},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert granular_cli(["run", "--root", str(tmp_path), "--set", "train.epochs=20"]) == 0

    metrics = json.loads((tmp_path / "data/evaluation/metrics.json").read_text())
    assert metrics["task"] == "regression"
    views = ["fine-all", "fine-serum-hgb", "fine-person", "fine-serum", "band-all", "fine-all-sex"]
    assert set(metrics["test"]) == {*views, "fused", "hgb", "mean"}
    assert sorted(metrics["fine_views"]) == sorted(view for view in views if view.startswith("fine-"))
    fused, mean = metrics["test"]["fused"], metrics["test"]["mean"]
    assert fused["r2_ci_low"] < fused["r2"] < fused["r2_ci_high"]
    assert fused["rmse_ci_low"] < fused["rmse"] < fused["rmse_ci_high"]
    assert fused["r2"] > 0.3 and abs(mean["r2"]) < 0.05  # the mean is the floor: R² about 0
    assert metrics["mean"] == {"model": "mean"} and metrics["baseline"] == {"model": "hgb"}
    assert metrics["paired_test"]["versus"] == metrics["best_single"] and 0 <= metrics["paired_test"]["p_value"] <= 1
    assert "accuracy" in metrics["test"]["band-all"]  # a view of the bins is scored as a classifier
    comparison = pd.read_csv(tmp_path / "data/evaluation/comparison.csv")
    assert {"rmse", "mae", "r2", "r2_ci_low", "r2_ci_high"} <= set(comparison.columns)
    predictions = pd.read_csv(tmp_path / "data/evaluation/test_predictions.csv")
    assert {"actual", "actual_band", "fused", "hgb", "band-all"} <= set(predictions.columns)
    # Each sex's expert next to the global network on the same test rows, in RMSE.
    by_sex = metrics["segments"]["fine-all-sex"]
    assert sum(scores["n"] for scores in by_sex.values()) == len(predictions)
    assert all(scores["expert"] and scores["rmse"] > 0 and scores["global_rmse"] > 0 for scores in by_sex.values())
    assert "rmse_rise" in json.loads((tmp_path / "data/evaluation/importance.json").read_text())["models"]["fused"]["scores"][0]
    printed = capsys.readouterr().out
    assert "R²" in printed and "(paired t on squared errors)" in printed

    # The registered model scores a CSV as pandas reads it (sex and ages as whole numbers), in
    # Python and over HTTP, and answers what the bundle answers: the number and its band.
    rows = pd.read_csv(tmp_path / "data/diabetes.csv").head(5)
    bundle = load_fused(tmp_path / "data/fused")
    expected = bundle.predict_values(rows[bundle.inputs.columns].astype("float64"))
    model_name = load_config(tmp_path / "params.yaml").serving.model_name  # what the run registered under
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    version = client.get_model_version(model_name, "1")
    served = mlflow.pyfunc.load_model(client.get_model_version_download_uri(model_name, "1"))  # its Logged Model's files
    answer = served.predict(rows)
    assert np.allclose(answer["prediction"], expected)
    assert set(answer["band"]) <= {"below 100", "100 to 200", "200 and above"}
    over_http = served_answer(
        f"models:/{model_name}/1", f"sqlite:///{tmp_path / 'mlruns.db'}",
        {"dataframe_split": rows.to_dict(orient="split")}, tmp_path / "server.log",
    )
    assert np.allclose([row["prediction"] for row in over_http["predictions"]], expected)
    # The gate speaks of R²; the mean is a floor the fused model clears.
    reasons = client.get_model_version(model_name, "1").tags.get("granular.promotion.reasons", "")
    assert "R²" in reasons or "r2" in reasons


def test_the_gate_measures_a_regression_in_r2_above_the_mean():
    from granular.config import PromotionConfig
    from granular.core import promotion
    from granular.problems import problem_of

    def decide(metrics: dict, champion_metrics: dict | None, config: PromotionConfig):
        return promotion.decide(metrics, champion_metrics, config, problem_of(metrics))

    def metrics(fused_r2: float, mse_gain: float, p: float) -> dict:
        return {
            "task": "regression", "best_single": "fine-all", "fine_views": ["fine-all"], "mean": {"model": "mean"},
            "test": {"fused": {"r2": fused_r2}, "fine-all": {"r2": 0.50}, "mean": {"r2": -0.01}},
            "paired_test": {"versus": "fine-all", "b": 60, "c": 40, "mse_gain": mse_gain, "p_value": p},
        }

    # The gate stated (test_promotion.GATE), not params.yaml's defaults: R² more than 0 above the
    # best single view, the paired test's p below 0.05.
    promoted = decide(metrics(0.56, 12.5, 0.001), None, PromotionConfig(**GATE))
    assert promoted.promote
    assert any("fused R² 0.5600 beats the best single view fine-all (0.5000)" in r for r in promoted.reasons)
    assert any("better than the mean value" in r for r in promoted.reasons)
    noise = decide(metrics(0.52, 2.0, 0.76), None, PromotionConfig(**GATE))
    assert not noise.promote
    assert noise.reasons == [
        "the gain in R² over fine-all is not significant: the paired test's p = 0.7600 is not below 0.05 "
        "(mean squared error +2.000 lower than fine-all's)"
    ]
    margin_alone = PromotionConfig(**(GATE | {"significance": "none", "min_gain_over_best_single": -1}))
    floor = decide(metrics(-0.02, -5.0, 0.04), None, margin_alone)
    assert not floor.promote and "no better than the mean value: R² -0.0200 against -0.0100" in floor.reasons[0]


def test_a_paired_test_of_squared_errors_follows_the_squared_error_not_the_count_of_closer_rows():
    # B is closer on most rows by a little, A far closer on a few: A's squared error is lower.
    rng = np.random.default_rng(3)
    error_b = np.where(np.arange(400) < 40, 30.0, 1.0) + rng.normal(0, 0.1, 400)
    error_a = np.where(np.arange(400) < 40, 2.0, 1.2) + rng.normal(0, 0.1, 400)
    test = evaluate.paired_squared_error_test(error_a, error_b)
    assert test["c"] > test["b"]  # B closer on more rows...
    assert test["mse_gain"] > 0 and test["p_value"] < 0.05  # ...A's squared error significantly lower
    assert evaluate.paired_squared_error_test(error_a, error_a)["p_value"] == 1.0
