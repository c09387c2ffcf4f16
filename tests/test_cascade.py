"""The granularity cascade: routing and threshold fitting on hand-made probabilities, the cascade
step on a tiny project (thresholds from the validation split alone, stage costs as measured),
and the served cascade against the fused model it ends in."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from granular.config import CascadeConfig, Config, ConfigError, load_config
from granular.core import cascade
from granular.core.cascade import NEVER
from granular.pipeline.cascade import cascade_step
from granular.pipeline.evaluate import evaluate_step
from granular.pipeline.fuse import fuse_step
from granular.serving.cascade import load_cascade
from granular.serving.predict import FusedClassifier
from granular.serving.served import load_served
from granular.store.atomic import read_npz, write_npz
from granular.store.paths import ProjectPaths
from tasks import serving, tracking
from tasks.registry import CHAMPION, register_version
from tasks.tracking import RunRef
from test_evaluate import TINY_TAXONOMY, _train_every_view
from test_serving import served_answer


def _one_hot_ish(labels: np.ndarray, sure: np.ndarray, classes: int = 3) -> np.ndarray:
    """Probabilities whose top class is `labels`, with top probability `sure`."""
    proba = np.tile((1 - sure)[:, None] / (classes - 1), (1, classes))
    proba[np.arange(len(labels)), labels] = sure
    return proba


# --- routing and fitting, on hand-made probabilities ------------------------------------------

def test_each_example_is_answered_by_the_first_stage_sure_enough():
    first = _one_hot_ish(np.array([0, 1, 2, 0]), np.array([0.9, 0.5, 0.95, 0.6]))
    second = _one_hot_ish(np.array([1, 1, 1, 1]), np.array([0.7, 0.7, 0.7, 0.7]))
    last = _one_hot_ish(np.array([2, 2, 2, 2]), np.array([0.4, 0.4, 0.4, 0.4]))
    stage = cascade.answering_stage([cascade.confidence(first), cascade.confidence(second)], (0.8, 0.7))
    assert stage.tolist() == [0, 1, 0, 1]  # 0.7 reaches the second's threshold: at it counts as sure
    stage = cascade.answering_stage([cascade.confidence(first), cascade.confidence(second)], (0.8, 0.75))
    assert stage.tolist() == [0, 2, 0, 2]
    np.testing.assert_array_equal(cascade.routed_proba([first, second, last], stage), np.stack([first[0], last[1], first[2], last[3]]))
    assert cascade.reach(stage, 3).tolist() == [1.0, 0.5, 0.5]


def test_the_fitted_threshold_is_the_cheapest_that_keeps_the_accuracy():
    # The cheap stage is right wherever it is at least 0.7 sure, wrong below; the last is always right.
    y = np.zeros(10, dtype=np.int64)
    sure = np.linspace(0.4, 0.94, 10)
    cheap = _one_hot_ish(np.where(sure >= 0.7, 0, 1), sure)
    last = _one_hot_ish(y, np.full(10, 0.9))
    seconds = np.array([1.0, 10.0])
    fit = cascade.fit_thresholds([cheap, last], y, seconds, max_drop=0.0)
    first_right = sure[sure >= 0.7].min()
    assert fit.chosen.thresholds == (pytest.approx(first_right),) and fit.chosen.accuracy == 1.0
    assert fit.chosen.seconds == pytest.approx(1.0 + 10.0 * (sure < 0.7).mean())
    # Allowed one mistake in ten, it answers one more example itself.
    loose = cascade.fit_thresholds([cheap, last], y, seconds, max_drop=0.1)
    assert loose.chosen.accuracy == pytest.approx(0.9) and loose.chosen.thresholds[0] < first_right
    costs = [point.seconds for point in fit.frontier]
    assert costs == sorted(costs) and [p.accuracy for p in fit.frontier] == sorted(p.accuracy for p in fit.frontier)


def test_a_stage_that_does_not_pay_for_itself_is_skipped():
    """A middle stage that answers nothing correctly costs its seconds for nothing: never run."""
    y = np.zeros(8, dtype=np.int64)
    cheap = _one_hot_ish(np.array([0, 0, 0, 0, 1, 1, 1, 1]), np.array([0.9, 0.9, 0.9, 0.9, 0.5, 0.5, 0.5, 0.5]))
    useless = _one_hot_ish(np.ones(8, dtype=np.int64), np.full(8, 0.95))
    last = _one_hot_ish(y, np.full(8, 0.8))
    fit = cascade.fit_thresholds([cheap, useless, last], y, np.array([1.0, 5.0, 10.0]), 0.0)
    assert fit.chosen.thresholds == (0.9, NEVER)
    assert fit.chosen.seconds == pytest.approx(1.0 + 0.5 * 10.0) and fit.chosen.answered == (0.5, 0.0, 0.5)


def test_the_cross_fitted_figure_routes_each_fold_by_thresholds_fitted_without_it():
    # Fold 0's cheap answers are right from 0.6 up, fold 1's only from 0.8 up: each fold's
    # thresholds, fitted on the other, let some of its examples through wrongly.
    y = np.zeros(8, dtype=np.int64)
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    sure = np.array([0.6, 0.7, 0.8, 0.9, 0.6, 0.7, 0.8, 0.9])
    cheap = _one_hot_ish(np.array([0, 0, 0, 0, 1, 1, 0, 0]), sure)
    last = _one_hot_ish(y, np.full(8, 0.8))
    seconds = np.array([1.0, 10.0])
    held_out = cascade.cross_fitted([cheap, last], y, folds, seconds, 0.0)
    assert held_out.accuracy == pytest.approx(6 / 8)  # fold 1's 0.6 and 0.7 pass under fold 0's threshold 0.6
    assert cascade.fit_thresholds([cheap, last], y, seconds, 0.0).chosen.accuracy == 1.0


def test_each_cross_fit_keeps_the_full_models_accuracy_on_its_own_folds():
    """The full model is right on every example of fold 0 and on half of fold 1's; so is the
    cheap stage, always 0.9 sure. Fitted on fold 1 alone, the cheap stage keeps fold 1's
    accuracy (0.5), not the whole split's (0.75): it answers fold 0 too."""
    y = np.zeros(8, dtype=np.int64)
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    right = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    cheap = _one_hot_ish(right, np.full(8, 0.9))
    last = _one_hot_ish(right, np.full(8, 0.6))
    held_out = cascade.cross_fitted([cheap, last], y, folds, np.array([1.0, 10.0]), 0.0)
    assert held_out.answered == (1.0, 0.0) and held_out.accuracy == 0.75


# --- configuration -----------------------------------------------------------------------------

def test_the_cascade_ends_in_the_fused_model_and_names_models_that_exist(tmp_path):
    with pytest.raises(ValueError, match="ends in the fused model"):
        CascadeConfig(stages=[{"model": "fine-28"}])
    with pytest.raises(ValueError, match="ends in the fused model"):
        CascadeConfig(stages=[{"model": "fused"}, {"model": "fine-28"}])
    params = tmp_path / "params.yaml"
    params.write_text("cascade: {stages: [{model: fine-14}, {model: fused}]}\n")
    with pytest.raises(ConfigError, match=r"cascade.stages.0: no model named 'fine-14'"):
        load_config(params)
    params.write_text("cascade: {stages: [{model: fine-28-tops-Dress}, {model: fused}]}\n")
    with pytest.raises(ConfigError, match="learns some of the classes"):
        load_config(params)
    params.write_text("distill: {enabled: false}\ncascade: {stages: [{model: student}, {model: fused}]}\n")
    with pytest.raises(ConfigError, match="distill.enabled is false"):
        load_config(params)
    params.write_text("fusion: {threshold_metric: f1}\n")
    with pytest.raises(ConfigError, match="fusion.threshold_metric decides two classes by a fitted cut"):
        load_config(params)


def test_the_default_cascade_goes_with_the_default_views():
    assert [stage.name for stage in Config().cascade.stages] == ["fine-28-no-tta", "fused"]
    own_views = Config.model_validate({"views": {"fine-14": {"level": "fine", "resolution": 14}}})
    assert not own_views.cascade.enabled  # fine-28 is not among them: no cascade unless declared


# --- the step and the served cascade, on a tiny project ----------------------------------------

def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """16x16 noise with a bright band whose row tells the class apart, faint for some images."""
    images = rng.integers(0, 60, size=(len(labels), 16, 16))
    for row, label in enumerate(labels):
        images[row, 4 * label : 4 * label + 4] += rng.integers(10, 150)
    return images.astype(np.uint8)


def _project(root, stages: list[dict]) -> tuple[Config, ProjectPaths]:
    rng = np.random.default_rng(0)
    y_train, y_test = np.arange(600) % 3, np.arange(150) % 3
    source = root / "source.npz"
    np.savez(source, x_train=_images(y_train, rng), y_train=y_train, x_test=_images(y_test, rng), y_test=y_test)
    (root / "taxonomy.yaml").write_text(TINY_TAXONOMY)
    config = Config.model_validate({
        "data": {"source": {"format": "npz", "path": str(source)}},
        "validate": {"image_shape": [16, 16], "min_per_class": 1},
        "taxonomy": "taxonomy.yaml",
        "split": {"val_fraction": 0.3, "folds": 2},
        "views": {"fine-16": {"level": "fine", "resolution": 16}, "fine-8": {"level": "fine", "resolution": 8}},
        "train": {"epochs": 1, "width": 4, "batch_size": 32, "threads": 1, "tta": True, "tta_shift": 1},
        "distill": {"enabled": False},
        "cascade": {"stages": stages},
    })
    paths = ProjectPaths(root)
    _train_every_view(config, paths)
    fuse_step(config, paths)
    return config, paths


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Config, ProjectPaths, dict]:
    config, paths = _project(tmp_path_factory.mktemp("cascade"), [{"model": "fine-16", "tta": False}, {"model": "fused"}])
    return config, paths, cascade_step(config, paths)


def test_the_step_writes_a_cascade_that_serves_its_recorded_answers(project):
    config, paths, record = project
    assert [stage["name"] for stage in record["stages"]] == ["fine-16-no-tta", "fused"]
    assert record["validation"]["chosen"]["accuracy"] >= record["validation"]["fused_accuracy"] - 1e-9
    served = load_served(paths.cascade_dir)
    test_images = np.load(paths.clean)["images"][np.load(paths.splits)["split"] == 2]
    answers = served.predict(test_images)
    recorded = read_npz(paths.cascade_dir / "predictions.npz")
    names = np.asarray([stage["name"] for stage in record["stages"]])
    assert answers["stage"].tolist() == names[recorded["test_stage"]].tolist()
    np.testing.assert_allclose(served.predict_proba(test_images), recorded["test_proba"], atol=1e-5)
    assert (paths.cascade_dir / "accuracy_vs_cost.png").stat().st_size > 0


def test_the_thresholds_are_fitted_on_validation_and_never_read_the_test_split(project, tmp_path):
    config, paths, record = project
    copy = ProjectPaths(tmp_path / "copy")
    shutil.copytree(paths.root, copy.root)
    splits = dict(read_npz(copy.splits))
    test = splits["split"] == 2
    splits["label"][test] = np.random.default_rng(1).permutation(splits["label"][test])  # other truths
    write_npz(copy.splits, **splits)
    fused = dict(read_npz(copy.fused_dir / "predictions.npz"))
    fused["test_proba"] = np.random.default_rng(2).dirichlet(np.ones(3), size=test.sum())  # other answers
    write_npz(copy.fused_dir / "predictions.npz", **fused)
    again = cascade_step(config, copy)
    assert [s["threshold"] for s in again["stages"]] == [s["threshold"] for s in record["stages"]]
    assert again["validation"]["chosen"] == record["validation"]["chosen"] | {
        "seconds_per_example": again["validation"]["chosen"]["seconds_per_example"]}  # measured anew
    assert again["test"]["accuracy"] != record["test"]["accuracy"]  # ... while the test figures did change


def test_the_recorded_cost_of_a_stage_follows_what_it_runs(project, tmp_path):
    config, paths, _ = project
    copy = ProjectPaths(tmp_path / "copy")  # the module's project keeps its cascade
    shutil.copytree(paths.root, copy.root)
    both = config.model_copy(update={"cascade": CascadeConfig(stages=[
        {"model": "fine-16", "tta": False}, {"model": "fine-16", "tta": True}, {"model": "fused"}])})
    seconds = {stage["name"]: stage["seconds_per_example"] for stage in cascade_step(both, copy)["stages"]}
    # With test-time copies a view runs six passes (mirror x 3 shifts); the fused model runs two views.
    assert seconds["fine-16"] > 2 * seconds["fine-16-no-tta"]
    assert seconds["fused"] > seconds["fine-16"]


def test_a_cascade_whose_first_stage_never_clears_equals_the_fused_model_bit_for_bit(project):
    _, paths, _ = project
    test_images = np.load(paths.clean)["images"][np.load(paths.splits)["split"] == 2]
    served = load_cascade(paths.cascade_dir)
    never = replace(served, stages=[replace(served.stages[0], threshold=1.01), served.stages[1]])  # runs; none reaches 1.01
    fused = FusedClassifier.load(paths.fused_dir)
    answers, expected = never.predict(test_images), fused.predict(test_images)
    assert set(answers["stage"]) == {"fused"}
    assert answers.keys() - expected.keys() == {"stage"}
    for column, values in expected.items():
        np.testing.assert_array_equal(answers[column], values, err_msg=column)


def test_the_fused_stage_does_not_run_again_the_pass_a_cheaper_stage_ran(project):
    _, paths, _ = project
    test_images = np.load(paths.clean)["images"][np.load(paths.splits)["split"] == 2]
    served = load_cascade(paths.cascade_dir)
    network = served.fused.views["fine-16"].networks[0].model
    passes = []
    hook = network.register_forward_hook(lambda module, inputs, output: passes.append(len(output)))
    try:
        proba, stage = served.answer(test_images)
    finally:
        hook.remove()
    hard = stage == 1
    assert 0 < hard.sum() < len(test_images)
    # One pass over every image, then five test-time copies of the hard ones: not six.
    assert passes == [len(test_images)] + [int(hard.sum())] * 5
    np.testing.assert_allclose(proba[hard], FusedClassifier.load(paths.fused_dir).predict_proba(test_images[hard]), atol=1e-6)


def test_the_evaluation_scores_the_cascade_against_the_fused_model(project):
    config, paths, _ = project
    metrics = evaluate_step(config, paths)
    assert {"accuracy", "accuracy_ci_low", "accuracy_ci_high"} <= metrics["test"]["cascade"].keys()
    scored = metrics["cascade"]
    assert scored["mcnemar"]["versus"] == "fused" and 0 <= scored["mcnemar"]["p_value"] <= 1
    assert sum(scored["answered"].values()) == pytest.approx(1.0)
    assert scored["accuracy_drop"] == pytest.approx(metrics["test"]["fused"]["accuracy"] - metrics["test"]["cascade"]["accuracy"])
    assert metrics["latency"]["cascade"]["images_per_s"] > 0
    # The cheaper stage alone is a model of its own row: the view in one pass, trained as the view.
    assert metrics["test"]["fine-16-no-tta"]["accuracy"] > 0 and metrics["latency"]["fine-16-no-tta"]["images_per_s"] > 0
    assert metrics["latency"]["fine-16-no-tta"]["train_seconds"] == metrics["latency"]["fine-16"]["train_seconds"]
    assert json.loads((paths.cascade_dir / "cascade.json").read_text())["enabled"]


@pytest.mark.slow
def test_the_registered_cascade_served_over_http_names_the_stage_of_each_answer(project, tmp_path):
    config, paths, _ = project
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client, experiment_id = tracking.open_experiment(uri, "cascade-test", tmp_path / "mlartifacts")
    parent = RunRef(uri=uri, experiment_id=experiment_id, run_id=client.create_run(experiment_id).info.run_id)
    test_images = np.load(paths.clean)["images"][np.load(paths.splits)["split"] == 2]
    model_uri = serving.log_served_model(parent, paths.cascade_dir, test_images[:3])
    evaluated = {"best_single": None, "test": {"fused": {"accuracy": 0.9, "level": "fine"}}}
    assert register_version(MlflowClient(uri), "cascade", model_uri, parent.run_id, evaluated, config.promotion)["promoted"]

    answer = served_answer(f"models:/cascade@{CHAMPION}", uri, {"inputs": test_images.tolist()}, tmp_path / "server.log")
    served = pd.DataFrame(answer["predictions"])
    expected = load_served(paths.cascade_dir).predict(test_images)
    assert served["stage"].tolist() == expected["stage"].tolist()
    assert set(served["stage"]) == {"fine-16-no-tta", "fused"}  # both stages answered some
    assert served["label"].tolist() == expected["label"].tolist()
