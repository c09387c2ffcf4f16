"""The problem seam: one object per kind of target, found by name, each with its own floor
baseline, significance test and headline metric; the pipeline asks it instead of branching."""
from __future__ import annotations

import numpy as np
import pytest

from pathlib import Path

from granular.config import load_config
from granular.problems import CLASSES, VALUES, problem_for, problem_named, problem_of


def test_the_factory_finds_each_problem_by_its_name_and_records_by_their_task():
    assert problem_named("classification") is CLASSES and problem_named("regression") is VALUES
    assert problem_of({"test": {}}) is CLASSES  # a classification's records never carried "task"
    assert problem_of({"task": "regression"}) is VALUES
    with pytest.raises(ValueError, match="no problem named 'ranking'"):
        problem_named("ranking")


ROOT = Path(__file__).resolve().parents[1]


def test_a_run_of_images_is_classified_and_a_table_is_what_its_task_says():
    assert problem_for(load_config(ROOT / "params.yaml")) is CLASSES  # images
    assert problem_for(load_config(ROOT / "examples/iris.yaml")) is CLASSES
    assert problem_for(load_config(ROOT / "examples/diabetes.yaml")) is VALUES


def test_the_majority_class_is_the_classifiers_floor():
    floor = CLASSES.floor_outputs(np.array([0, 2, 2, 2]), {"val": 2, "test": 3}, num_classes=3)
    np.testing.assert_array_equal(floor["test"], [[0.25, 0.0, 0.75]] * 3)
    assert floor["val"].shape == (2, 3) and CLASSES.floor == "majority"


def test_the_mean_value_is_the_regressions_floor():
    floor = VALUES.floor_outputs(np.array([1.0, 2.0, 6.0]), {"val": 2, "test": 1}, num_classes=1)
    np.testing.assert_array_equal(floor["val"], [[3.0], [3.0]])
    assert floor["test"].shape == (1, 1) and VALUES.floor == "mean"


def test_each_floor_blocks_a_fused_model_no_better_than_it():
    classes = {"majority": {"model": "majority"}, "test": {
        "fused": {"accuracy": 0.9, "balanced_accuracy": 0.5}, "majority": {"accuracy": 0.9, "balanced_accuracy": 0.5},
    }}
    assert [check.passed for check in CLASSES.floor_checks(classes, "accuracy")] == [False]
    values = {"mean": {"model": "mean"}, "test": {"fused": {"r2": 0.3}, "mean": {"r2": -0.01}}}
    assert [check.passed for check in VALUES.floor_checks(values, "r2")] == [True]
    values["test"]["fused"]["r2"] = -0.02
    assert [check.passed for check in VALUES.floor_checks(values, "r2")] == [False]
    assert CLASSES.floor_checks({"test": {}}, "accuracy") == [] == VALUES.floor_checks({"test": {}}, "r2")  # no floor evaluated


def test_a_classifier_is_tested_by_mcnemar_and_a_regression_by_its_paired_test_of_squared_errors():
    metrics = {
        "mcnemar": {"versus": "fine", "b": 30, "c": 5, "p_value": 0.0001, "method": "chi2"},
        "paired_test": {"versus": "fine", "b": 5, "c": 30, "mse_gain": -4.0, "p_value": 0.0001},
    }
    mcnemar = CLASSES.significance_check(metrics, "fine", 0.05)
    assert mcnemar.passed and "McNemar p" in mcnemar.sentence
    paired = VALUES.significance_check(metrics, "fine", 0.05)  # the same record: its own test says worse
    assert not paired.passed and "significantly worse" in paired.sentence
    assert not CLASSES.significance_check({}, "fine", 0.05).passed  # a test the evaluation lacks fails
    bootstrap = {"metric": "macro_f1", "significance": {
        "test": "paired_bootstrap", "versus": "fine", "difference": 0.02, "p_value": 0.003, "resamples": 1000,
    }}
    paired = CLASSES.significance_check(bootstrap, "fine", 0.05)  # another metric: the paired bootstrap's
    assert paired.passed and paired.sentence == (
        "the gain over fine is significant: the paired bootstrap's p = 0.0030 < 0.05 "
        "(fused macro f1 +0.0200 against fine, 1000 paired resamples)"
    )
    bootstrap["significance"]["p_value"] = 0.3
    assert "not significant: the paired bootstrap's p = 0.3000" in CLASSES.significance_check(bootstrap, "fine", 0.05).sentence


def test_each_problem_headlines_its_own_metric():
    assert (CLASSES.headline, VALUES.headline) == ("accuracy", "r2")
    outputs, y = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.array([0, 1, 1])
    assert CLASSES.validation_score(outputs, y) == {"val_accuracy": pytest.approx(2 / 3)}
    assert VALUES.validation_score(np.array([[1.0], [3.0]]), np.array([1.0, 1.0])) == {"val_rmse": pytest.approx(2 ** 0.5)}
    rows = VALUES.comparison_rows({"test": {"fused": {"level": "fine", "rmse": 1.5, "r2": 0.25}}})
    assert rows[0]["R²"] == "0.2500" and "accuracy" in rows[0]  # a binned view's accuracy has a column


def test_a_regressions_binned_view_learns_classes():
    config = load_config(ROOT / "examples/diabetes.yaml")
    assert VALUES.view_problem(config, config.view("fine-all")) is VALUES
    assert VALUES.view_problem(config, config.view("band-all")) is CLASSES
