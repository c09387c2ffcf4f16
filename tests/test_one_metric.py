"""One metric throughout (promotion.metric): the evaluation's best single view, the fused model's
gain, its interval and its paired test, the gate's floor and its verdict, and the printed table's
mark all name the same view in the same metric; every score has an interval around it."""
from __future__ import annotations

import numpy as np
import pytest

from flows.cli import format_table
from granular.config import Config, PromotionConfig
from granular.core import evaluate, promotion
from granular.core.taxonomy import parse_taxonomy
from granular.problems import CLASSES, VALUES
from granular.problems.base import TestOutputs as Outputs  # not a test class
from granular.problems.scoring import CLASS_SCORES
from granular.store.paths import ProjectPaths

SURE, FINDER = "fine-14", "fine-28"  # two views: one never finds the rare class, one does
TAXONOMY = parse_taxonomy({"levels": ["fine"], "classes": [{"fine": "common"}, {"fine": "rare"}]})


class Reads:
    """The test split's labels and each view's test outputs, as the earlier steps would give them."""

    def __init__(self, labels: np.ndarray, outputs: dict[str, np.ndarray]):
        self.labels, self._outputs = labels, outputs

    def rows(self, split: str) -> dict[str, np.ndarray]:
        return {"label": self.labels}

    def outputs(self, split: str) -> dict[str, np.ndarray]:
        return self._outputs

    def specialists(self, taxonomy) -> dict:
        return {}


def _answers(labels: np.ndarray, right: np.ndarray, confidence: float = 0.8) -> np.ndarray:
    """Two-class probabilities whose answer is the label where `right`, the other class elsewhere."""
    answer = np.where(right, labels, 1 - labels)
    proba = np.full((len(labels), 2), 1 - confidence)
    proba[np.arange(len(labels)), answer] = confidence
    return proba


def _imbalanced_run(metric: str | None, fused_as: str | None = None):
    """A 10%-rare table of 400 test rows. SURE never finds the rare class (accuracy 0.90,
    balanced accuracy 0.50); FINDER finds most rare rows at the cost of some common ones
    (accuracy 0.89, balanced accuracy 0.85); the fused model finds more of both (accuracy 0.94,
    balanced accuracy 0.92), or answers as the view `fused_as` does."""
    labels = np.r_[np.zeros(360, dtype=int), np.ones(40, dtype=int)]
    rare = labels == 1
    sure = _answers(labels, ~rare)
    finder_right = np.r_[np.arange(360) >= 36, np.arange(40) >= 8]  # 36 common, 8 rare wrong
    finder = _answers(labels, finder_right)
    fused_right = np.r_[np.arange(360) >= 20, np.arange(40) >= 4]
    fused = _answers(labels, fused_right, 0.9) if fused_as is None else {SURE: sure, FINDER: finder}[fused_as]
    majority = np.tile([0.9, 0.1], (400, 1))
    config = Config.model_validate({
        "data": {"source": {"format": "npz", "path": "unused.npz"}},
        "views": {SURE: {"level": "fine", "resolution": 14}, FINDER: {"level": "fine", "resolution": 28}},
        "promotion": {"metric": metric},
    })
    others = Outputs(fused=fused, baselines={"majority": majority}, student={}, fusion={})
    return config, Reads(labels, {SURE: sure, FINDER: finder}), others


def _evaluate(tmp_path, metric: str | None, fused_as: str | None = None) -> dict:
    config, reads, others = _imbalanced_run(metric, fused_as)
    return CLASSES.evaluate(config, ProjectPaths(tmp_path), TAXONOMY, reads, others)


def _marked(metrics: dict) -> str:
    """The model the printed table marks as the best single view."""
    marked = [line.split()[0] for line in format_table(metrics).splitlines() if "<- best single view" in line]
    assert len(marked) == 1
    return marked[0]


def test_the_best_view_the_table_marks_and_the_verdict_names_are_the_best_in_the_chosen_metric(tmp_path):
    metrics = _evaluate(tmp_path, "balanced_accuracy")
    assert metrics["metric"] == "balanced_accuracy"
    test = metrics["test"]
    assert test[SURE]["accuracy"] > test[FINDER]["accuracy"]  # the best in accuracy is the other view
    assert metrics["best_single"] == FINDER == _marked(metrics)
    assert metrics["fused_minus_best_single"] == pytest.approx(test["fused"]["balanced_accuracy"] - test[FINDER]["balanced_accuracy"])
    ci = metrics["fused_minus_best_single_ci"]
    assert ci["low"] <= metrics["fused_minus_best_single"] <= ci["high"]
    significance = metrics["significance"]
    assert significance["test"] == "paired_bootstrap" and significance["versus"] == FINDER
    assert "mcnemar" not in metrics  # McNemar's test is of accuracy
    decision = promotion.decide(metrics, None, PromotionConfig(metric="balanced_accuracy"), CLASSES)
    assert decision.promote
    gain, floor, significant, _ = decision.reasons
    assert f"the best single view {FINDER}" in gain and f"the gain over {FINDER} is significant" in significant
    assert SURE not in " ".join(decision.reasons)
    # In accuracy, the same outputs compare against the other view, and the floor holds the fused model back.
    accuracy = _evaluate(tmp_path, None)
    assert accuracy["metric"] == "accuracy" and accuracy["best_single"] == SURE == _marked(accuracy)
    assert accuracy["significance"]["test"] == "mcnemar" and accuracy["mcnemar"]["versus"] == SURE


def test_every_score_of_every_model_has_an_interval_around_it(tmp_path):
    metrics = _evaluate(tmp_path, "roc_auc")
    for name, scores in metrics["test"].items():
        for score in CLASS_SCORES:
            low, high = scores[f"{score}_ci_low"], scores[f"{score}_ci_high"]
            assert low <= scores[score] <= high, (name, score)
    for score in CLASS_SCORES:  # a score that varies from resample to resample has a width
        assert metrics["test"]["fused"][f"{score}_ci_low"] < metrics["test"]["fused"][f"{score}_ci_high"]


def test_the_floor_is_beaten_in_the_chosen_metric(tmp_path):
    # A fused model that answers as FINDER: below the majority class in accuracy (0.89 against
    # 0.90), far above it in balanced accuracy.
    metrics = _evaluate(tmp_path, "balanced_accuracy", fused_as=FINDER)
    [floor] = CLASSES.floor_checks(metrics, "balanced_accuracy")
    assert floor.passed
    assert floor.sentence == "the fused model does better than the majority class (balanced accuracy 0.8500 against 0.5000)"
    [floor] = CLASSES.floor_checks(metrics, "accuracy")  # in accuracy it does not
    assert not floor.passed and "accuracy 0.8900 against 0.9000" in floor.sentence


def test_a_fused_model_that_answers_as_the_best_view_is_said_to(tmp_path):
    metrics = _evaluate(tmp_path, None, fused_as=SURE)
    assert metrics["significance"]["identical"] and metrics["fused_minus_best_single"] == 0
    lines = format_table(metrics).splitlines()
    assert f"the fused model answers as {SURE} does (identical on every test row)" in lines
    assert not any("McNemar" in line or "fused - best single view" in line for line in lines)
    assert not _evaluate(tmp_path, None)["significance"]["identical"]


def test_the_paired_bootstrap_finds_a_clear_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    resamples = evaluate.resample_counts(500)
    labels = rng.integers(0, 2, 500)
    good = _answers(labels, rng.random(500) < 0.9)
    coin = _answers(labels, rng.random(500) < 0.5)
    other_coin = _answers(labels, rng.random(500) < 0.5)

    def test(a: np.ndarray, b: np.ndarray) -> dict:
        scores = [evaluate.resampled_balanced_accuracy(resamples, labels, p.argmax(1), 2) for p in (a, b)]
        observed = (evaluate.balanced_accuracy(evaluate.confusion_matrix(labels, a.argmax(1), 2))
                    - evaluate.balanced_accuracy(evaluate.confusion_matrix(labels, b.argmax(1), 2)))
        return evaluate.paired_bootstrap_test(scores[0] - scores[1], observed)

    clear = test(good, coin)
    assert clear["difference"] > 0.3 and clear["p_value"] == pytest.approx(1 / 1001)  # no resample on the other side
    null = test(coin, other_coin)
    assert null["p_value"] > 0.2
    assert evaluate.paired_bootstrap_test(np.zeros(1000), 0.0)["p_value"] == 1.0  # the same model


def test_a_regression_names_its_metric_and_compares_its_floor_in_it():
    values = {"mean": {"model": "mean"}, "metric": "r2", "test": {"fused": {"r2": 0.3}, "mean": {"r2": -0.01}}}
    [floor] = VALUES.floor_checks(values, "r2")
    assert floor.passed and floor.sentence == "the fused model does better than the mean value (R² 0.3000 against -0.0100)"
