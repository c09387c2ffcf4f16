"""Gradient-boosted trees on TableArrays: a table view's `hgb` learner and the baseline."""
from __future__ import annotations

import numpy as np
import pytest

from granular.config import TreesConfig
from granular.modalities.tables.trees import MAX_CATEGORIES, Trees, fit_trees, load_trees
from granular.nn.inputs import UNKNOWN, TableArrays


def rule_table(rows: int, seed: int) -> tuple[TableArrays, np.ndarray]:
    """Class = (x0 > 0) + 2 * (colour is 1): four classes, one numeric and one categorical cue."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, 3)).astype(np.float32)
    colour = rng.integers(0, 3, size=rows)
    labels = (numeric[:, 0] > 0).astype(np.int64) + 2 * (colour == 1)
    return TableArrays(numeric, colour[:, None].astype(np.int64), (3,)), labels


def accuracy(baseline: Trees, table: TableArrays, labels: np.ndarray) -> float:
    return float((baseline.predict_proba(table).argmax(axis=1) == labels).mean())


def test_it_learns_a_numeric_and_a_categorical_rule():
    train, y_train = rule_table(1_500, seed=0)
    val, y_val = rule_table(300, seed=1)
    test, y_test = rule_table(500, seed=2)
    baseline = fit_trees(train, y_train, val, y_val, num_classes=4, settings=TreesConfig(max_iter=40), threads=1)
    assert accuracy(baseline, test, y_test) > 0.9  # chance is about 0.33
    assert baseline.fit_seconds > 0 and baseline.ordinal_columns == ()


def test_every_class_has_a_column_even_one_absent_from_training():
    train, y_train = rule_table(600, seed=0)
    keep = y_train < 2  # classes 2 and 3 never seen
    val, y_val = rule_table(200, seed=1)  # has classes 2 and 3: left out of early stopping
    baseline = fit_trees(train[keep], y_train[keep], val, y_val, num_classes=5, seed=0, threads=1)
    probabilities = baseline.predict_proba(val)
    assert probabilities.shape == (200, 5) and probabilities.dtype == np.float32
    assert (probabilities[:, 2:] == 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_unknown_and_unseen_categories_predict_without_error():
    train, y_train = rule_table(600, seed=0)
    baseline = fit_trees(
        train, y_train, None, None, num_classes=4, settings=TreesConfig(early_stopping=False, max_iter=20), threads=1
    )
    test, _ = rule_table(4, seed=3)
    odd = TableArrays(test.numeric, np.array([[UNKNOWN], [3], [99], [1]]), test.cardinalities)
    probabilities = baseline.predict_proba(odd)
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_a_column_of_too_many_categories_becomes_ordinal():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 300, size=(2_000, 1))
    labels = (codes[:, 0] >= 150).astype(np.int64)
    table = TableArrays(rng.normal(size=(2_000, 1)).astype(np.float32), codes, (300,))
    baseline = fit_trees(
        table[:1_500], labels[:1_500], None, None, num_classes=2, settings=TreesConfig(max_iter=40), threads=1
    )
    assert baseline.ordinal_columns == (0,) and 300 > MAX_CATEGORIES
    assert accuracy(baseline, table[1_500:], labels[1_500:]) > 0.95


def test_labels_outside_the_classes_are_refused_with_their_row():
    train, y_train = rule_table(50, seed=0)
    y_train[7] = 4
    with pytest.raises(ValueError, match=r"train: label 4 at row 7 is outside 0..3"):
        fit_trees(train, y_train, None, None, num_classes=4, threads=1)


def test_saved_trees_load_and_predict_the_same(tmp_path):
    train, y_train = rule_table(600, seed=0)
    val, y_val = rule_table(200, seed=1)
    trees = fit_trees(train, y_train, val, y_val, num_classes=4, settings=TreesConfig(max_iter=20), threads=1)
    trees.save(tmp_path / "network-0.joblib")
    np.testing.assert_array_equal(load_trees(tmp_path / "network-0.joblib").predict_proba(val), trees.predict_proba(val))
    record = trees.record(train, y_train, val, y_val)
    assert record["epoch"] == 1 and 1 <= record["rounds"] <= 20 and record["val_accuracy"] > 0.8
    assert record["val_loss"] > 0 and record["images_per_s"] > 0 and record["seconds"] == trees.fit_seconds


def test_a_file_that_holds_something_else_is_refused(tmp_path):
    import joblib

    joblib.dump({"not": "trees"}, tmp_path / "network-0.joblib")
    with pytest.raises(ValueError, match="holds a dict, not boosted trees"):
        load_trees(tmp_path / "network-0.joblib")
