"""Fusion on synthetic probabilities whose right answer is known."""
import json
from typing import get_args

import numpy as np
import pytest
from pydantic import ValidationError

from granular.config import FusionConfig, FusionStrategy, GatingConfig
from granular.core.evaluate import log_loss
from granular.core.fusion import (
    STRATEGIES,
    BestViewFusion,
    ConvexFusion,
    GatingFusion,
    ProductFusion,
    StackingFusion,
    _selection,
    build_fuser,
    choose_fusion,
    restore_fusion,
)

N_FINE = 4
COARSE_OF_FINE = np.array([0, 0, 1, 1])
SIBLING = np.array([1, 0, 3, 2])  # the other fine class under the same coarse class
PARENTS = {"fine": np.arange(N_FINE), "noise": np.arange(N_FINE), "coarse": COARSE_OF_FINE}
# The fusion settings these tests state, so that tuning params.yaml's fusion: defaults changes no
# expected result: auto over every strategy, stacking's C of 1, a gate of 8 tanh units.
FUSION = {
    "strategy": "auto", "candidates": list(get_args(FusionStrategy)), "stacking": {"c": 1.0},
    "gating": {"hidden": 8, "l2": 0.001, "seed": 0}, "allow_missing_views": False,
    "threshold_metric": None, "positive_class": None,
}


def _fusion(**changes) -> FusionConfig:
    """FUSION with `changes`."""
    return FusionConfig(**(FUSION | changes))


SETTINGS = _fusion()


def _softmax(scores):
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _one_hot(labels, classes=N_FINE):
    return np.eye(classes)[labels]


def _synthetic(n=600, seed=0):
    """Labels, an informative fine view, a pure-noise fine view and an informative coarse view."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_FINE, n)
    fine = _softmax(2 * _one_hot(y) + rng.normal(0, 1, (n, N_FINE)))
    noise = rng.dirichlet(np.ones(N_FINE), n)  # independent of y
    coarse = _softmax(2 * _one_hot(COARSE_OF_FINE[y], 2) + rng.normal(0, 1, (n, 2)))
    return y, {"fine": fine, "noise": noise, "coarse": coarse}


def _coarse_resolves_a_confusion(n=400, seed=0):
    """A fine view that cannot tell class 1 from class 2 (their coarse parents differ) and a
    coarse view that can."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_FINE, n)
    fine = _softmax(3 * _one_hot(y) + rng.normal(0, 0.5, (n, N_FINE)))
    fine[np.isin(y, [1, 2])] = [0.05, 0.45, 0.45, 0.05]
    coarse = _softmax(2 * _one_hot(COARSE_OF_FINE[y], 2) + rng.normal(0, 1, (n, 2)))
    return y, {"fine": fine, "coarse": coarse}, {"fine": np.arange(N_FINE), "coarse": COARSE_OF_FINE}


def _segment_experts(n=800, seed=0):
    """Segment = the coarse class. View a is right on segment 0 and view b on segment 1; on its
    other segment each names the right coarse class but a fine class within it at random, as
    sure of itself as where it is right."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_FINE, n)
    segment = COARSE_OF_FINE[y]

    def right():
        return _softmax(3 * _one_hot(y) + rng.normal(0, 1, (n, N_FINE)))

    def guessing():
        return _softmax(3 * _one_hot(np.where(rng.random(n) < 0.5, y, SIBLING[y])) + rng.normal(0, 1, (n, N_FINE)))

    a = np.where(segment[:, None] == 0, right(), guessing())
    b = np.where(segment[:, None] == 1, right(), guessing())
    return y, segment, {"a": a, "b": b}, {"a": np.arange(N_FINE), "b": np.arange(N_FINE)}


def _miscalibrated(n=600, seed=0):
    """An overconfident view, and an informative view that names the class after the true one."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_FINE, n)
    overconfident = _softmax(6 * (_one_hot(y) + rng.normal(0, 0.6, (n, N_FINE))))
    shifted = _softmax(2 * _one_hot((y + 1) % N_FINE) + rng.normal(0, 1, (n, N_FINE)))
    return y, {"over": overconfident, "shifted": shifted}, {"over": np.arange(N_FINE), "shifted": np.arange(N_FINE)}


def _accuracy(proba, y):
    return float((proba.argmax(axis=1) == y).mean())


def _product_with_exponents_of_one(parents):
    record = {
        "views": list(parents), "hyperparameters": {"max_exponent": 5.0},
        "state": {"exponents": dict.fromkeys(parents, 1.0)},
    }
    return ProductFusion.from_record(record, parents)


def _folds(n, k=3):
    return np.arange(n) % k


# --- product -------------------------------------------------------------------------------


def test_product_of_exponents_one_is_the_normalised_product_of_fine_and_lifted_coarse_probabilities():
    parents = {"fine": np.arange(N_FINE), "coarse": COARSE_OF_FINE}
    fine = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])
    coarse = np.array([[0.8, 0.2], [0.5, 0.5]])
    product = fine * coarse[:, COARSE_OF_FINE]  # row 0: 0.08, 0.16, 0.06, 0.08
    fused = _product_with_exponents_of_one(parents).predict_proba({"fine": fine, "coarse": coarse})
    np.testing.assert_allclose(fused, product / product.sum(axis=1, keepdims=True), rtol=1e-9)
    np.testing.assert_allclose(fused[0], [0.08 / 0.38, 0.16 / 0.38, 0.06 / 0.38, 0.08 / 0.38])


def test_product_ignores_a_pure_noise_view():
    y, probas = _synthetic()
    exponents = ProductFusion(PARENTS).fit(probas, y).weights_
    assert exponents["noise"] < 0.05
    assert exponents["fine"] > 0.5
    assert exponents["coarse"] > 0.5


def test_product_exponents_stay_within_bounds():
    y, probas = _synthetic()
    exponents = ProductFusion(PARENTS, max_exponent=0.3).fit(probas, y).weights_
    assert all(0.0 <= w <= 0.3 for w in exponents.values())


def test_learned_exponents_beat_exponents_of_one_when_a_view_is_noise():
    y, probas = _synthetic()
    learned = ProductFusion(PARENTS).fit(probas, y).predict_proba(probas)
    plain = _product_with_exponents_of_one(PARENTS).predict_proba(probas)
    assert log_loss(learned, y) < 0.9 * log_loss(plain, y)


def test_hierarchical_product_resolves_a_fine_confusion_with_the_coarse_view():
    y, probas, parents = _coarse_resolves_a_confusion()
    fused = ProductFusion(parents).fit(probas, y).predict_proba(probas)
    confused = np.isin(y, [1, 2])
    coarse_right = probas["coarse"].argmax(axis=1) == COARSE_OF_FINE[y]
    assert _accuracy(probas["fine"][confused], y[confused]) <= 0.5  # a tie, broken towards class 1
    assert _accuracy(fused[confused], y[confused]) == pytest.approx(coarse_right[confused].mean())  # the tie broken
    assert _accuracy(fused[confused], y[confused]) > 0.85
    assert log_loss(fused, y) < 0.5 * log_loss(probas["fine"], y)


# --- convex --------------------------------------------------------------------------------


def test_convex_weights_are_on_the_simplex_and_drop_the_noise_view():
    y, probas = _synthetic()
    weights = ConvexFusion(PARENTS).fit(probas, y).weights_
    assert sum(weights.values()) == pytest.approx(1.0)
    assert all(w >= 0 for w in weights.values())
    assert weights["noise"] < 0.01
    assert weights["fine"] > 0.9


def test_convex_spreads_a_coarse_view_evenly_over_its_fine_classes():
    parents = {"fine": np.arange(N_FINE), "coarse": COARSE_OF_FINE}
    fuser = ConvexFusion.from_record(
        {"views": ["fine", "coarse"], "hyperparameters": {}, "state": {"weights": {"fine": 0.5, "coarse": 0.5}}},
        parents,
    )
    fused = fuser.predict_proba({"fine": np.array([[0.1, 0.2, 0.3, 0.4]]), "coarse": np.array([[0.8, 0.2]])})
    np.testing.assert_allclose(fused, [[0.25, 0.3, 0.2, 0.25]])  # 0.5 * fine + 0.5 * (0.4, 0.4, 0.1, 0.1)


def test_convex_pool_beats_each_view_when_views_err_independently():
    rng = np.random.default_rng(1)
    n = 600
    y = rng.integers(0, N_FINE, n)
    probas = {v: _softmax(1.5 * _one_hot(y) + rng.normal(0, 1, (n, N_FINE))) for v in ("a", "b")}
    parents = {"a": np.arange(N_FINE), "b": np.arange(N_FINE)}
    fuser = ConvexFusion(parents).fit(probas, y)
    assert fuser.weights_["a"] == pytest.approx(0.5, abs=0.15)
    assert log_loss(fuser.predict_proba(probas), y) < min(log_loss(p, y) for p in probas.values())


# --- stacking ------------------------------------------------------------------------------


def test_stacking_beats_every_single_view_and_pool_on_miscalibrated_views():
    y, probas, parents = _miscalibrated()
    folds = _folds(len(y))
    _, record = choose_fusion(SETTINGS, parents, probas, y, folds)
    scores = record["selection"]["scores"]
    stacking = scores["stacking"]["log_loss"]
    assert stacking < 0.5 * min(log_loss(p, y) for p in probas.values())
    assert stacking < 0.5 * min(s["log_loss"] for name, s in scores.items() if name != "stacking")
    assert scores["stacking"]["accuracy"] > 0.85 > _accuracy(probas["over"], y)


def test_stacking_leans_on_the_informative_view():
    y, probas = _synthetic()
    share = StackingFusion(PARENTS).fit(probas, y).summary()["coefficient_share"]
    assert sum(share.values()) == pytest.approx(1.0)
    assert share["noise"] < 0.2
    assert share["noise"] < share["fine"]


@pytest.mark.parametrize("classes", [2, N_FINE])
def test_stacking_predicts_what_scikit_learn_predicts(classes):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, 200)
    proba = _softmax(_one_hot(y, classes) + rng.normal(0, 1, (200, classes)))
    fuser = StackingFusion({"v": np.arange(classes)}, c=0.5).fit({"v": proba}, y)
    expected = LogisticRegression(C=0.5, max_iter=1000).fit(np.log(proba), y).predict_proba(np.log(proba))
    np.testing.assert_allclose(fuser.predict_proba({"v": proba}), expected, atol=1e-9)


def test_stacking_refuses_a_fine_class_without_examples():
    y, probas = _synthetic(n=60)
    keep = y != 3
    with pytest.raises(ValueError, match=r"needs examples of every fine class to fit on; classes \[3\] have none"):
        StackingFusion(PARENTS).fit({v: p[keep] for v, p in probas.items()}, y[keep])


# --- gating --------------------------------------------------------------------------------


def test_gating_uses_each_segment_expert_on_its_own_segment():
    y, segment, probas, parents = _segment_experts()
    fuser = GatingFusion(parents).fit(probas, y)
    gate = fuser.gate_weights(probas)  # (N, views a and b)
    disagree = probas["a"].argmax(axis=1) != probas["b"].argmax(axis=1)  # where the choice matters
    assert gate[disagree & (segment == 0), 0].mean() > 0.8
    assert gate[disagree & (segment == 1), 1].mean() > 0.8


def test_gating_beats_every_single_view_and_the_global_pools():
    y, _, probas, parents = _segment_experts()
    candidates = ["product", "convex", "gating"]
    _, record = choose_fusion(_fusion(candidates=candidates), parents, probas, y, _folds(len(y)))
    scores = record["selection"]["scores"]
    assert record["strategy"] == "gating"
    assert scores["gating"]["log_loss"] < min(log_loss(p, y) for p in probas.values()) - 0.2
    assert scores["gating"]["log_loss"] < min(scores["convex"]["log_loss"], scores["product"]["log_loss"]) - 0.2
    assert scores["gating"]["accuracy"] > 0.9 > max(_accuracy(p, y) for p in probas.values())


@pytest.mark.parametrize("hidden", [0, 4])
def test_gating_drops_a_pure_noise_view_with_a_linear_or_hidden_layer_gate(hidden):
    y, probas = _synthetic()
    weights = GatingFusion(PARENTS, hidden=hidden).fit(probas, y).summary()["mean_gate_weights"]
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["noise"] < 0.05
    assert weights["fine"] > weights["coarse"]


def test_gating_fit_is_deterministic():
    y, _, probas, parents = _segment_experts(n=300)
    first = GatingFusion(parents, seed=3).fit(probas, y).predict_proba(probas)
    np.testing.assert_array_equal(GatingFusion(parents, seed=3).fit(probas, y).predict_proba(probas), first)


# --- every strategy ------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_fused_probabilities_are_distributions(strategy):
    y, probas = _synthetic()
    fused = build_fuser(strategy, PARENTS, SETTINGS).fit(probas, y).predict_proba(probas)
    assert fused.shape == (len(y), N_FINE)
    assert (fused >= 0).all()
    np.testing.assert_allclose(fused.sum(axis=1), 1.0)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_refit_forgets_the_first_fit(strategy):
    y, probas = _synthetic(n=200)
    noise_y = np.random.default_rng(5).permutation(y)
    fuser = build_fuser(strategy, PARENTS, SETTINGS)
    fuser.fit(probas, noise_y)
    refitted = fuser.fit(probas, y).predict_proba(probas)
    np.testing.assert_allclose(refitted, build_fuser(strategy, PARENTS, SETTINGS).fit(probas, y).predict_proba(probas))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_record_round_trip_through_json_predicts_the_same(strategy):
    y, probas = _synthetic(n=300)
    fuser, record = choose_fusion(_fusion(strategy=strategy), PARENTS, probas, y, _folds(len(y), 2))
    restored = restore_fusion(json.loads(json.dumps(record)), dict(reversed(PARENTS.items())))  # the bundle's order
    assert type(restored) is type(fuser)
    assert restored.summary() == fuser.summary()
    np.testing.assert_array_equal(restored.predict_proba(probas), fuser.predict_proba(probas))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_missing_view_raises_naming_it(strategy):
    y, probas = _synthetic(n=40)
    fuser = build_fuser(strategy, PARENTS, SETTINGS).fit(probas, y)
    del probas["coarse"]
    with pytest.raises(ValueError, match=r"fusion needs predictions of view\(s\) \['coarse'\]"):
        fuser.predict_proba(probas)
    with pytest.raises(ValueError, match=r"view\(s\) \['coarse'\]"):
        build_fuser(strategy, PARENTS, SETTINGS).fit(probas, y)


def test_config_strategies_are_the_fusion_strategies():
    assert set(get_args(FusionStrategy)) == set(STRATEGIES)


def test_hyperparameters_come_from_the_settings():
    settings = FusionConfig(stacking={"c": 0.25}, gating=GatingConfig(hidden=3, l2=0.5, seed=7))
    assert build_fuser("stacking", PARENTS, settings).c == 0.25
    gating = build_fuser("gating", PARENTS, settings)
    assert (gating.hidden, gating.l2, gating.seed) == (3, 0.5, 7)


# --- auto and the record -------------------------------------------------------------------


def test_auto_picks_the_known_best_and_records_why():
    y, probas, parents = _miscalibrated()
    fuser, record = choose_fusion(SETTINGS, parents, probas, y, _folds(len(y)))
    selection = record["selection"]
    scores = selection["scores"]
    assert set(scores) == set(STRATEGIES)
    assert all(set(s) == {"log_loss", "accuracy"} for s in scores.values())
    ranked = sorted(scores, key=lambda name: scores[name]["log_loss"])
    assert record["strategy"] == selection["winner"] == ranked[0] == "stacking"
    assert type(fuser) is StackingFusion
    assert selection["runner_up"] == ranked[1]
    assert selection["margin"] == pytest.approx(scores[ranked[1]]["log_loss"] - scores["stacking"]["log_loss"])
    assert selection["margin"] > 0
    assert selection["folds"] == 3
    assert selection["reason"].startswith("stacking: cross-fitted validation log-loss")
    assert record["summary"] == fuser.summary()
    json.dumps(record)  # fusion.json takes it as it is


def test_best_view_passes_the_view_with_the_lowest_log_loss_through():
    y, probas = _synthetic()
    fuser = BestViewFusion(PARENTS).fit(probas, y)
    assert fuser.summary()["view"] == "fine"
    losses = fuser.summary()["log_losses"]
    assert losses["fine"] <= log_loss(probas["fine"], y)  # scaled by its best exponent
    assert losses["fine"] < min(losses["noise"], losses["coarse"])
    np.testing.assert_array_equal(fuser.predict_proba(probas).argmax(1), probas["fine"].argmax(1))


def test_best_view_makes_an_overconfident_view_honest_and_keeps_its_predicted_classes():
    y, probas, parents = _miscalibrated()
    fuser = BestViewFusion({"over": parents["over"]}).fit({"over": probas["over"]}, y)
    fused = fuser.predict_proba(probas)
    assert fuser.summary()["exponent"] < 0.5  # softened
    assert log_loss(fused, y) < log_loss(probas["over"], y) - 0.1
    assert fuser.summary()["log_losses"]["over"] == pytest.approx(log_loss(fused, y), rel=1e-6)
    np.testing.assert_array_equal(fused.argmax(1), probas["over"].argmax(1))
    # A record written before the exponent existed passes its view through as it is.
    record = fuser.to_record()
    del record["state"]["exponent"]
    older = BestViewFusion.from_record(record, {"over": parents["over"]})
    np.testing.assert_allclose(older.predict_proba(probas), probas["over"], rtol=1e-6)


def test_auto_keeps_the_best_view_when_combining_does_worse_on_held_out_folds():
    # Few examples and many noise views: a weakly penalised stacking fits the noise in-sample and
    # loses out of fold, so auto must keep the informative view alone.
    rng = np.random.default_rng(0)
    y, probas = _synthetic(n=80)
    parents = {"fine": np.arange(N_FINE)}
    for k in range(6):
        probas[f"noise{k}"] = rng.dirichlet(np.ones(N_FINE), len(y))
        parents[f"noise{k}"] = np.arange(N_FINE)
    settings = _fusion(candidates=["stacking", "best_view"], stacking={"c": 100.0})
    fuser, record = choose_fusion(settings, parents, {v: probas[v] for v in parents}, y, _folds(len(y)))
    scores = record["selection"]["scores"]
    assert scores["best_view"]["log_loss"] < scores["stacking"]["log_loss"]
    assert record["strategy"] == "best_view" and record["summary"]["view"] == "fine"
    np.testing.assert_array_equal(fuser.predict_proba(probas).argmax(1), probas["fine"].argmax(1))


def test_auto_does_not_trade_accuracy_for_calibration():
    # The cross-fitted scores of a default run (2026-12-06): the product had the lowest log-loss
    # but was 2 of 6,000 validation images less accurate than fine-28 alone, and lost to it on
    # the test set (McNemar p = 0.013). The best view must win that.
    scores = {
        "best_view": {"accuracy": 0.93033, "log_loss": 0.27700}, "convex": {"accuracy": 0.93033, "log_loss": 0.27701},
        "gating": {"accuracy": 0.92967, "log_loss": 0.27525}, "product": {"accuracy": 0.93000, "log_loss": 0.19700},
        "stacking": {"accuracy": 0.92750, "log_loss": 0.20165},
    }
    selection = _selection(scores, folds=5)
    assert (selection["winner"], selection["runner_up"]) == ("best_view", "convex")
    assert selection["left_out"] == ["gating", "product", "stacking"]
    assert "left out, less accurate than best_view (0.9303): gating (0.9297), product (0.9300)" in selection["reason"]
    # As accurate or more: the lowest log-loss wins, as before.
    scores["product"]["accuracy"] = 0.93033
    assert _selection(scores, folds=5)["winner"] == "product"
    # Without best_view among the candidates, nothing is left out.
    del scores["best_view"]
    assert _selection(scores, folds=5)["left_out"] == []


def test_auto_guards_the_promotion_metric_not_accuracy():
    # An imbalanced target judged in balanced accuracy: stacking is the more accurate (it answers
    # the common class more) but finds fewer of the rare class than the best view alone.
    scores = {
        "best_view": {"accuracy": 0.90, "balanced_accuracy": 0.71, "log_loss": 0.30},
        "stacking": {"accuracy": 0.92, "balanced_accuracy": 0.64, "log_loss": 0.25},
    }
    assert _selection(scores, folds=5)["winner"] == "stacking"
    selection = _selection(scores, folds=5, metric="balanced_accuracy")
    assert (selection["winner"], selection["left_out"], selection["metric"]) == ("best_view", ["stacking"], "balanced_accuracy")
    assert "left out, lower in balanced_accuracy than best_view (0.7100): stacking (0.6400)" in selection["reason"]


def test_auto_scores_each_candidate_in_the_promotion_metric():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.2).astype(np.int64)
    probas = {name: _softmax(2 * _one_hot(y, 2) + rng.normal(0, noise, (300, 2))) for name, noise in (("a", 1.0), ("b", 2.0))}
    parents = {name: np.arange(2) for name in probas}
    _, record = choose_fusion(_fusion(), parents, probas, y, _folds(len(y)), metric="roc_auc")
    assert record["selection"]["metric"] == "roc_auc"
    assert all(0.5 < scores["roc_auc"] <= 1.0 for scores in record["selection"]["scores"].values())


def test_auto_compares_only_the_listed_candidates():
    y, probas = _synthetic()
    _, record = choose_fusion(_fusion(candidates=["convex", "product"]), PARENTS, probas, y, _folds(len(y)))
    assert set(record["selection"]["scores"]) == {"convex", "product"}
    assert record["strategy"] == "product"  # the convex pool cannot use the coarse view's evidence as well


def test_named_strategy_is_fitted_and_scored_alone():
    y, probas = _synthetic()
    fuser, record = choose_fusion(_fusion(strategy="convex"), PARENTS, probas, y, _folds(len(y), 2))
    assert type(fuser) is ConvexFusion
    assert record["strategy"] == "convex"
    assert list(record["selection"]["scores"]) == ["convex"]
    assert record["selection"]["runner_up"] is None and record["selection"]["margin"] is None


def test_cross_fitted_scores_are_out_of_sample():
    y, probas = _synthetic()
    _, record = choose_fusion(_fusion(strategy="stacking"), PARENTS, probas, y, _folds(len(y)))
    in_sample = log_loss(StackingFusion(PARENTS).fit(probas, y).predict_proba(probas), y)
    assert record["selection"]["scores"]["stacking"]["log_loss"] > in_sample


def test_unknown_strategy_raises():
    known = r"\['best_view', 'convex', 'gating', 'product', 'stacking'\]"
    with pytest.raises(ValueError, match=rf"unknown fusion strategy 'mean'; choose from {known} or 'auto'"):
        build_fuser("mean", PARENTS, SETTINGS)
    with pytest.raises(ValidationError, match="strategy"):
        FusionConfig(strategy="weighted")


def test_candidates_listed_twice_are_refused():
    with pytest.raises(ValidationError, match=r"candidates \['convex'\] are listed more than once"):
        FusionConfig(candidates=["convex", "product", "convex"])


def test_cross_fitting_refuses_a_single_fold():
    y, probas = _synthetic(n=20)
    with pytest.raises(ValueError, match="two folds or more"):
        choose_fusion(SETTINGS, PARENTS, probas, y, folds=np.zeros(len(y), dtype=int))


def test_restore_refuses_a_record_of_other_views():
    y, probas = _synthetic(n=60)
    _, record = choose_fusion(_fusion(strategy="product"), PARENTS, probas, y, _folds(len(y), 2))
    with pytest.raises(ValueError, match=r"fitted on views \['coarse', 'fine', 'noise'\], not \['coarse', 'fine'\]"):
        restore_fusion(record, {"fine": np.arange(N_FINE), "coarse": COARSE_OF_FINE})


def test_restore_refuses_a_record_without_fitted_state():
    with pytest.raises(ValueError, match="holds no fitted state"):
        restore_fusion({"strategy": "product", "weights": {"fine": 1.0}}, {"fine": np.arange(N_FINE)})
    with pytest.raises(ValueError, match="names strategy 'weighted'"):
        restore_fusion({"strategy": "weighted"}, {"fine": np.arange(N_FINE)})


def test_log_loss_of_a_known_case():
    proba = np.array([[0.5, 0.5], [0.25, 0.75]])
    assert log_loss(proba, np.array([0, 1])) == pytest.approx(-(np.log(0.5) + np.log(0.75)) / 2)


def test_a_pass_through_record_restores_a_fuser_that_changes_nothing():
    from granular.core.fusion import pass_through_record

    proba = np.random.default_rng(0).dirichlet(np.ones(4), size=6)
    fuser = restore_fusion(pass_through_record("student", np.arange(4)), {"student": np.arange(4)})
    np.testing.assert_allclose(fuser.predict_proba({"student": proba}), proba, atol=1e-12)


# --- specialists ---------------------------------------------------------------------------

GROUP = np.array([0, 1])  # the specialist's classes: the two fine classes under coarse class 0


def _a_specialist_sees_what_the_view_confuses(n=900, seed=0, informative=True):
    """A fine view sure of the coarse class but torn between classes 0 and 1, and a specialist
    of classes 0 and 1: right among them where informative (noise otherwise), and on the other
    classes' examples, which it never learned, sure of one of its own at random."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_FINE, n)
    fine = _softmax(3 * _one_hot(y) + rng.normal(0, 0.5, (n, N_FINE)))
    torn = np.isin(y, GROUP)
    fine[torn] = _softmax(np.log([0.45, 0.45, 0.05, 0.05]) + rng.normal(0, 0.3, (int(torn.sum()), N_FINE)))
    own = np.where(torn & informative, y, rng.integers(0, 2, n))
    specialist = _softmax(4 * _one_hot(own) + rng.normal(0, 0.5, (n, N_FINE)))
    specialist[:, 2:] = 0.01  # the classes it never saw
    specialist /= specialist.sum(axis=1, keepdims=True)
    return y, {"fine": fine, "specialist": specialist}, {"fine": np.arange(N_FINE), "specialist": np.arange(N_FINE)}


def test_a_specialist_decides_among_its_classes_and_leaves_the_rest_to_the_fusion():
    y, probas, parents = _a_specialist_sees_what_the_view_confuses()
    fuser = build_fuser("product", parents, SETTINGS, {"specialist": GROUP}).fit(probas, y)
    base = build_fuser("product", {"fine": parents["fine"]}, SETTINGS).fit({"fine": probas["fine"]}, y)
    refined, plain = fuser.predict_proba(probas), base.predict_proba({"fine": probas["fine"]})
    assert fuser.summary()["specialists"]["specialist"]["weight"] > 0.5
    assert _accuracy(refined, y) > _accuracy(plain, y) + 0.15
    # The group's probability and every other class's are the fusion's; only the split within moves.
    np.testing.assert_allclose(refined[:, 2:], plain[:, 2:], atol=1e-9)
    np.testing.assert_allclose(refined[:, GROUP].sum(axis=1), plain[:, GROUP].sum(axis=1), atol=1e-9)
    np.testing.assert_allclose(refined.sum(axis=1), 1.0, atol=1e-9)


def test_a_specialist_that_knows_nothing_is_given_no_say():
    y, probas, parents = _a_specialist_sees_what_the_view_confuses(informative=False)
    fuser = build_fuser("product", parents, SETTINGS, {"specialist": GROUP}).fit(probas, y)
    assert fuser.summary()["specialists"]["specialist"]["weight"] < 0.1


def test_auto_refines_each_candidate_and_never_takes_a_specialist_for_the_best_view():
    y, probas, parents = _a_specialist_sees_what_the_view_confuses()
    # Alone, the specialist's log-loss on its classes' examples is the lowest: it must still not
    # be the view best_view passes through, since it cannot answer the other classes.
    fuser, record = choose_fusion(SETTINGS, parents, probas, y, _folds(len(y)), specialists={"specialist": GROUP})
    assert set(record["selection"]["scores"]) == set(SETTINGS.candidates)
    assert record["summary"]["specialists"]["specialist"]["classes"] == [0, 1]
    assert "specialist" not in fuser.base.parents
    best_view = build_fuser("best_view", parents, SETTINGS, {"specialist": GROUP}).fit(probas, y)
    assert best_view.summary()["view"] == "fine"
    restored = restore_fusion(json.loads(json.dumps(record)), parents)
    np.testing.assert_allclose(restored.predict_proba(probas), fuser.predict_proba(probas), atol=1e-12)
    with pytest.raises(ValueError, match=r"refined by specialist view\(s\) \['specialist'\], which the model lacks"):
        restore_fusion(record, {"fine": parents["fine"]})
