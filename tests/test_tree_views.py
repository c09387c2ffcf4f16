"""Table views learned by boosted trees (`learner: hgb`), and the boosted-trees baseline as one
more input of the fusion, step by step without Prefect."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.cli import format_table
from granular.config import Config
from granular.demo import synthetic
from granular.modalities.experts import read_view_spec
from granular.pipeline.clean import clean_step
from granular.pipeline.evaluate import evaluate_step
from granular.pipeline.fuse import fuse_step
from granular.pipeline.import_raw import import_raw_step
from granular.pipeline.split import split_step
from granular.pipeline.train import train_step
from granular.pipeline.view import view_step
from granular.serving.predict import FusedClassifier
from granular.store.atomic import read_npz
from granular.store.paths import ProjectPaths

SETTINGS = {
    "data": {
        "source": {"format": "parquet", "path": "synthetic.parquet"},
        "table": {
            "target": "fine", "id": "id", "ancestors": {"coarse": "coarse"}, "test_fraction": 0.3,
            "feature_groups": {
                "coarse": ["x0", "region"],
                "numeric": ["x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "channel"],
            },
        },
    },
    "taxonomy": None,
    "validate": {"min_per_class": 5},
    "split": {"folds": 3},
    "views": {
        "fine-numeric-hgb": {"level": "fine", "features": "numeric", "learner": "hgb"},
        "fine-numeric-hgb-region": {
            "level": "fine", "features": "numeric", "learner": "hgb",
            "segments": {"by": "column", "column": "region", "min_size": 200},
        },
        "coarse-coarse": {"level": "coarse", "features": "coarse"},
    },
    "train": {"epochs": 2, "batch_size": 256, "optimizer": "adamw", "lr": 0.003, "width": 16, "threads": 1},
    "trees": {"max_iter": 60},
    "distill": {"enabled": False},
}


def _run(root: Path, settings: dict) -> tuple[Config, ProjectPaths, dict, dict]:
    config = Config.model_validate(settings)
    paths = ProjectPaths(root)
    for step in (import_raw_step, clean_step, split_step):
        step(config, paths)
    trained = {}
    for view in config.views:
        view_step(config, paths, view)
        trained[view] = train_step(config, paths, view, warn=lambda line: None)
    choice = fuse_step(config, paths)
    return config, paths, trained, {"choice": choice, **evaluate_step(config, paths)}


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trees")
    synthetic.generate(3_000, root / "synthetic.parquet", seed=0, segment_effect=3.0)
    return root


@pytest.mark.slow
def test_tree_views_train_per_segment_save_and_fuse_with_the_baseline(table: Path):
    config, paths, trained, metrics = _run(table, SETTINGS)

    segmented = paths.model_dir("fine-numeric-hgb-region")
    spec = read_view_spec(segmented)
    assert spec["learner"] == "hgb" and spec["networks"] == 1 + len(spec["reader"]["expert_values"]) > 1
    assert sorted(p.name for p in segmented.glob("network-*")) == [f"network-{n}.joblib" for n in range(spec["networks"])]
    history = trained["fine-numeric-hgb-region"]["history"]
    assert len(history) == spec["networks"] and all(r["epoch"] == 1 and r["rounds"] >= 1 for r in history)
    assert {r.get("segment") for r in history} == {"global", *spec["reader"]["expert_values"]}
    assert "learner" not in read_view_spec(paths.model_dir("coarse-coarse"))  # a network's view, as before

    # The baseline is a fusion input, saved in the bundle: the fused model rebuilt from its files
    # answers the test rows as the fuse step did, trees and networks together.
    bundle = FusedClassifier.load(paths.fused_dir)
    assert set(bundle.views) == {*config.views, "hgb"}
    frame = pd.read_parquet(table / "synthetic.parquet")
    test_rows = read_npz(paths.splits)
    test_rows = test_rows["index"][test_rows["split"] == 2]
    fused = read_npz(paths.fused_dir / "predictions.npz")["test_proba"]
    served = bundle.predict_proba(frame.iloc[test_rows][bundle.inputs.columns])
    np.testing.assert_allclose(served, fused, atol=1e-5)
    # ... and the evaluation compares against the very trees the fusion used.
    baseline = read_npz(paths.baselines_dir / "predictions.npz")
    np.testing.assert_allclose(baseline["hgb"], bundle.views["hgb"].predict(
        frame.iloc[test_rows], bundle.runtime), atol=1e-6)
    assert {"hgb", "majority", "fused", *config.views} == set(metrics["test"])
    assert json.loads((paths.baselines_dir / "figures.json").read_text())["hgb"]["train_seconds"] > 0
    # The fused model's training cost is its inputs': the views' (trees too, and the fold models
    # this small table fuses out of fold with) and the baseline's.
    views = sum(r["seconds"] for view in config.views for r in trained[view]["history"] + trained[view]["folds"])
    latency = json.loads(paths.latency.read_text())
    assert latency["fused"]["train_seconds"] == pytest.approx(views + latency["hgb"]["train_seconds"])
    assert latency["fine-numeric-hgb-region"]["train_seconds"] > 0


@pytest.mark.slow
def test_alone_the_baseline_can_be_the_fused_model(table: Path, tmp_path: Path):
    """best_view over weak views picks the trees: the fused model is never left without them."""
    shutil.copy(table / "synthetic.parquet", tmp_path / "synthetic.parquet")
    settings = {**SETTINGS, "views": {"coarse-coarse": SETTINGS["views"]["coarse-coarse"]},
                "fusion": {"strategy": "best_view"}}
    _, _, _, metrics = _run(tmp_path, settings)
    assert metrics["choice"]["strategy"] == "best_view" and metrics["choice"]["summary"]["view"] == "hgb"
    assert metrics["test"]["fused"]["accuracy"] == metrics["test"]["hgb"]["accuracy"]


@pytest.mark.parametrize(("views", "message"), [
    ({"fine-numeric-hgb": {"level": "fine", "features": "numeric", "learner": "hgb", "train": {"epochs": 3}}},
     "train: sets a network's training, but the view learns hgb trees"),
    ({"fine-numeric": {"level": "fine", "features": "numeric", "learner": "hgb"}}, "must be named 'fine-numeric-hgb'"),
])
def test_a_tree_view_refuses_network_settings_and_is_named_after_its_learner(views, message):
    with pytest.raises(ValueError, match=message):
        Config.model_validate({**SETTINGS, "views": views})


def test_a_tree_view_that_is_the_baseline_is_refused_and_one_that_adds_something_is_not():
    """Every table run fits and fuses boosted trees on every feature at the fine level (`hgb`):
    a view of the same model would be the fusion's same input twice."""
    hgb = {"level": "fine", "features": "all", "learner": "hgb"}
    with pytest.raises(ValueError, match=(
        r"view fine-all-hgb: the `hgb` baseline is this model \(boosted trees on every feature at level fine\), "
        r"fitted and fused in every table run already; declare a view that adds something: a network "
        r"\(learner: mlp\), a feature group, a coarser level or segments"
    )):
        Config.model_validate({**SETTINGS, "views": {"fine-all-hgb": hgb, **SETTINGS["views"]}})
    region = {"by": "column", "column": "region", "min_size": 200}
    adding = {
        "fine-numeric-hgb": {**hgb, "features": "numeric"},  # a feature group
        "coarse-all-hgb": {**hgb, "level": "coarse"},  # a coarser level
        "fine-all-hgb-region": {**hgb, "segments": region},  # segments
        "fine-all": {"level": "fine", "features": "all"},  # a network
    }
    assert set(Config.model_validate({**SETTINGS, "views": adding}).views) == set(adding)
    # The global model of fine-all-hgb-region is the baseline; a coarser level's must be declared.
    with pytest.raises(ValueError, match="its global model, view 'coarse-all-hgb', must be declared too"):
        Config.model_validate({**SETTINGS, "views": {"coarse-all-hgb-region": {**hgb, "level": "coarse", "segments": region}}})


def test_trees_neither_transfer_nor_cotrain():
    hgb = {"level": "fine", "features": "numeric", "learner": "hgb"}
    with pytest.raises(ValueError, match="fine-numeric-hgb learns hgb trees: a transfer hands over a network"):
        Config.model_validate({**SETTINGS, "views": {"fine-numeric-hgb": hgb}, "transfers": {
            "fine-numeric": {"level": "fine", "features": "numeric", "start_from": "fine-numeric-hgb"}}})
    with pytest.raises(ValueError, match="a co-trained view trains a network, not hgb trees"):
        Config.model_validate({**SETTINGS, "views": {}, "cotrained": {
            "fine-numeric-hgb": hgb, "fine-numeric": {"level": "fine", "features": "numeric"}},
            "cotrain": {"pair": {"first": "fine-numeric-hgb", "second": "fine-numeric", "weight": 0.5}}})


def test_a_rare_class_gets_a_decision_threshold_that_the_evaluation_and_the_served_model_both_use(tmp_path: Path):
    rng = np.random.default_rng(0)
    rows = 2_500
    rare = rng.random(rows) < 0.08
    frame = pd.DataFrame({
        "id": np.arange(rows), "label": np.where(rare, "yes", "no"),
        "a": rng.normal(size=rows) + 1.3 * rare, "b": rng.normal(size=rows) + 0.8 * rare,
        "c": rng.normal(size=rows), "kind": rng.choice(["p", "q", "r"], size=rows),
    })
    frame.to_csv(tmp_path / "table.csv", index=False)
    settings = {
        "data": {"source": {"format": "csv", "path": "table.csv"},
                 "table": {"target": "label", "id": "id", "feature_groups": {"signal": ["a", "b"]}}},
        "taxonomy": None, "validate": {"min_per_class": 5}, "split": {"val_fraction": 0.3, "folds": 3},
        "views": {"fine-signal-hgb": {"level": "fine", "features": "signal", "learner": "hgb"}},
        "trees": {"max_iter": 40}, "train": {"threads": 1},
        "fusion": {"strategy": "stacking", "threshold_metric": "balanced_accuracy"}, "distill": {"enabled": False},
    }
    _, paths, _, metrics = _run(tmp_path, settings)

    threshold = metrics["choice"]["threshold"]
    assert threshold["positive"] == "yes" and threshold["metric"] == "balanced_accuracy"  # the rarer class
    assert 0 < threshold["value"] < 0.5 and threshold["validation"] >= threshold["validation_at_half"]
    assert metrics["test"]["fused"]["threshold"] == threshold["value"]
    # One level of labels: no hierarchical scores (they would repeat accuracy), so no such columns.
    assert not {"hierarchical_f1", "mistake_severity"} & set(metrics["test"]["fused"])
    assert "hF1" not in format_table(metrics)
    # The evaluation scores the answers the served model gives: by the cut, not the most probable class.
    proba = read_npz(paths.fused_dir / "predictions.npz")["test_proba"]
    assert json.loads((paths.fused_dir / "fusion.json").read_text())["threshold"] == threshold
    answered = pd.read_csv(paths.test_predictions)["fused"]
    assert (answered == np.where(proba[:, threshold["positive_index"]] >= threshold["value"], "yes", "no")).all()
    assert (answered == "yes").sum() > (proba.argmax(axis=1) == threshold["positive_index"]).sum()
    bundle = FusedClassifier.load(paths.fused_dir)
    test_rows = read_npz(paths.splits)
    test_rows = test_rows["index"][test_rows["split"] == 2]
    served = bundle.predict(frame.iloc[test_rows][bundle.inputs.columns])
    assert served["fine"].tolist() == answered.tolist()


def test_a_threshold_needs_two_classes(table: Path, tmp_path: Path):
    shutil.copy(table / "synthetic.parquet", tmp_path / "synthetic.parquet")
    settings = {**SETTINGS, "views": {"fine-numeric-hgb": SETTINGS["views"]["fine-numeric-hgb"]},
                "fusion": {"threshold_metric": "f1"}}
    with pytest.raises(ValueError, match="a decision threshold is for a target of two classes; this one has"):
        _run(tmp_path, settings)


@pytest.mark.slow
def test_permutation_importance_names_the_columns_a_view_rests_on(table: Path):
    """The synthetic label rests most on x0 and x1 (the coarse class), and on x3 through a sign
    that flips with the region: a global model can hardly use x3, the region's experts can."""
    config = Config.model_validate(SETTINGS)
    paths = ProjectPaths(table)
    if not paths.metrics.is_file():  # the module's first test ran the pipeline here
        _run(table, SETTINGS)
    importance = {name: model["scores"] for name, model in json.loads(paths.importance.read_text())["models"].items()}
    assert set(importance) == {*config.views, "fused"}
    rise = {view: {row["column"]: row["log_loss_rise"] for row in rows} for view, rows in importance.items()}
    ranked = [row["column"] for row in importance["fine-numeric-hgb"]]
    assert set(ranked[:2]) == {"x0", "x1"} and set(ranked) == set(SETTINGS["data"]["table"]["feature_groups"]["numeric"])
    assert rise["fine-numeric-hgb-region"]["x3"] > 3 * rise["fine-numeric-hgb"]["x3"]
    assert rise["fine-numeric-hgb-region"]["region"] > rise["fine-numeric-hgb-region"]["x2"]  # it routes rows to experts
    assert "region" in rise["fused"] and "id" not in rise["fused"]
