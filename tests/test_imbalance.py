"""Imbalanced targets: class weights, ranking scores, and a decision threshold for two classes."""
from __future__ import annotations

import numpy as np
import pytest

from granular.config import TrainConfig, TreesConfig
from granular.core.class_weights import class_weights
from granular.core.evaluate import ranking_metrics
from granular.core.taxonomy import parse_taxonomy
from granular.core.threshold import apply_threshold, choose_threshold
from granular.modalities.tables.trees import fit_trees
from granular.nn.device import select_runtime
from granular.nn.inputs import TableArrays
from granular.nn.objective import Classes
from granular.nn.predict import predict_proba
from granular.nn.train import fit

TAXONOMY = parse_taxonomy({"levels": ["fine", "kind"], "classes": [
    {"fine": "no", "kind": "calm"}, {"fine": "yes", "kind": "event"}, {"fine": "maybe", "kind": "event"},
]})


def test_balanced_weights_make_every_class_count_alike():
    y = np.array([0] * 90 + [1] * 10)
    weights = class_weights("balanced", y, TAXONOMY, "fine")
    np.testing.assert_allclose(weights, [100 / (3 * 90), 100 / (3 * 10), 1.0])  # class 2 absent: 1
    assert (np.bincount(y, minlength=3) * weights)[:2].tolist() == pytest.approx([100 / 3, 100 / 3])


def test_given_weights_apply_at_the_level_they_name_and_a_typo_is_refused():
    np.testing.assert_allclose(class_weights({"yes": 5.0}, np.zeros(3, int), TAXONOMY, "fine"), [1, 5, 1])
    assert class_weights({"yes": 5.0}, np.zeros(3, int), TAXONOMY, "kind") is None  # a coarser stage
    np.testing.assert_allclose(class_weights({"event": 2.0}, np.zeros(3, int), TAXONOMY, "kind"), [1, 2])
    with pytest.raises(ValueError, match=r"class_weight: \['yess'\] are not classes of the taxonomy"):
        class_weights({"yess": 5.0}, np.zeros(3, int), TAXONOMY, "fine")
    assert class_weights(None, np.zeros(3, int), TAXONOMY, "fine") is None


def _rare_positives(rows: int, seed: int) -> tuple[TableArrays, np.ndarray]:
    """About 6% positives, which overlap the negatives: an unweighted learner rarely says yes."""
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.06).astype(np.int64)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    x[:, 0] += 1.2 * y
    return TableArrays(x, np.zeros((rows, 0), np.int64), ()), y


def _recall(proba: np.ndarray, y: np.ndarray) -> float:
    return float((proba.argmax(axis=1)[y == 1] == 1).mean())


def test_balanced_class_weights_make_trees_find_the_rare_class():
    train, y_train = _rare_positives(4_000, 0)
    test, y_test = _rare_positives(2_000, 1)
    settings = TreesConfig(max_iter=50, early_stopping=False)
    plain = fit_trees(train, y_train, None, None, 2, settings, threads=1)
    weighted = fit_trees(train, y_train, None, None, 2, settings, threads=1,
                         class_weights=class_weights("balanced", y_train, TAXONOMY, "kind"))
    assert _recall(plain.predict_proba(test), y_test) < 0.2 < 0.5 < _recall(weighted.predict_proba(test), y_test)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_balanced_class_weights_make_a_network_find_the_rare_class(smoothing):
    train, y_train = _rare_positives(4_000, 0)
    test, y_test = _rare_positives(2_000, 1)
    runtime = select_runtime(threads=1, precision="fp32")
    config = TrainConfig(epochs=3, batch_size=128, optimizer="adamw", lr=0.003, width=16, label_smoothing=smoothing, threads=1)
    weights = class_weights("balanced", y_train, TAXONOMY, "kind")
    networks = {
        name: fit(train, y_train, test, y_test, 2, config, runtime, warn=lambda line: None, objective=Classes(w))
        for name, w in (("plain", None), ("weighted", weights))
    }
    recalls = {name: _recall(predict_proba(network, test, runtime), y_test) for name, network in networks.items()}
    assert recalls["plain"] < 0.2 < 0.5 < recalls["weighted"]
    # ... and not by answering the rare class for every row
    answers = predict_proba(networks["weighted"], test, runtime).argmax(axis=1)
    assert (answers[y_test == 0] == 0).mean() > 0.5


def test_a_weighted_network_keeps_the_epoch_best_at_the_weighted_loss():
    y = np.array([0] * 95 + [1] * 5)
    weights = class_weights("balanced", y, TAXONOMY, "kind")
    majority = np.tile([0.95, 0.05], (100, 1))  # the common class for every row: the best plain log-loss
    finds_rare = np.where(y[:, None] == 1, [0.3, 0.7], [0.8, 0.2])
    plain, weighted = Classes(), Classes(weights)
    assert plain.scores(majority, y)["val_loss"] < plain.scores(finds_rare, y)["val_loss"]
    assert weighted.scores(finds_rare, y)["val_loss"] < weighted.scores(majority, y)["val_loss"]


def test_ranking_scores_read_the_probabilities_not_the_decision():
    y = np.array([0, 0, 0, 1])
    ranked_right = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])  # never says 1, ranks it first
    assert ranking_metrics(y, ranked_right) == {"roc_auc": 1.0, "pr_auc": 1.0}
    constant = np.tile([0.75, 0.25], (4, 1))
    assert ranking_metrics(y, constant) == {"roc_auc": 0.5, "pr_auc": 0.25}  # the share of the rare class
    three = np.eye(3)[[0, 1, 2, 0]] * 0.8 + 0.2 / 3
    assert ranking_metrics(np.array([0, 1, 2, 0]), three)["roc_auc"] == 1.0
    assert np.isnan(ranking_metrics(np.array([1, 1]), three[:2])["roc_auc"])


def test_the_threshold_is_the_cut_that_scores_best_on_validation():
    proba = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.6])
    positive = np.array([0, 0, 0, 1, 0, 1, 1], dtype=bool)
    chosen = choose_threshold(proba, positive, "balanced_accuracy")
    # Answering yes from 0.3 up finds all three, at one false alarm: (1 + 3/4) / 2.
    assert chosen["value"] == pytest.approx(0.25) and chosen["validation"] == pytest.approx(0.875)
    assert chosen["validation_at_half"] == pytest.approx((1 / 3 + 1) / 2)
    # Accuracy: 6 of 7 right from 0.4 up and from 0.3 up (5 at 0.5); of the two, the cut nearer 0.5.
    assert choose_threshold(proba, positive, "accuracy")["value"] == pytest.approx(0.375)
    two = np.stack([1 - proba, proba], axis=1)
    assert apply_threshold(two, {"positive_index": 1, **chosen}).tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert apply_threshold(two, None).tolist() == [0, 0, 0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold(proba, np.zeros(7, dtype=bool), "f1")
