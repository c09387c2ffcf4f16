"""Fusion on synthetic probabilities whose right answer is known."""
import numpy as np
import pytest

from granular.evaluate import log_loss
from granular.fusion import ProductFusion, WeightedProductFusion, choose_fusion

N_FINE = 4
COARSE_OF_FINE = np.array([0, 0, 1, 1])
PARENTS = {"fine": np.arange(N_FINE), "noise": np.arange(N_FINE), "coarse": COARSE_OF_FINE}


def _softmax(scores):
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _synthetic(n=600, seed=0):
    """Labels, an informative fine view, a pure-noise fine view and an informative coarse view."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_FINE, n)
    fine = _softmax(2 * np.eye(N_FINE)[y] + rng.normal(0, 1, (n, N_FINE)))
    noise = rng.dirichlet(np.ones(N_FINE), n)  # independent of y
    coarse = _softmax(2 * np.eye(2)[COARSE_OF_FINE[y]] + rng.normal(0, 1, (n, 2)))
    return y, {"fine": fine, "noise": noise, "coarse": coarse}


def test_product_is_the_normalised_product_of_fine_and_lifted_coarse_probabilities():
    parents = {"fine": np.arange(N_FINE), "coarse": COARSE_OF_FINE}
    fine = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])
    coarse = np.array([[0.8, 0.2], [0.5, 0.5]])
    product = fine * coarse[:, COARSE_OF_FINE]  # row 0: 0.08, 0.16, 0.06, 0.08
    expected = product / product.sum(axis=1, keepdims=True)
    fused = ProductFusion(parents).fit({"fine": fine, "coarse": coarse}, np.array([0, 0])).predict_proba(
        {"fine": fine, "coarse": coarse})
    np.testing.assert_allclose(fused, expected, rtol=1e-9)
    np.testing.assert_allclose(fused[0], [0.08 / 0.38, 0.16 / 0.38, 0.06 / 0.38, 0.08 / 0.38])


def test_product_weights_are_all_one():
    y, probas = _synthetic()
    assert ProductFusion(PARENTS).fit(probas, y).weights_ == {"fine": 1.0, "noise": 1.0, "coarse": 1.0}


def test_weighted_product_ignores_a_pure_noise_view():
    y, probas = _synthetic()
    weights = WeightedProductFusion(PARENTS).fit(probas, y).weights_
    assert weights["noise"] < 0.05
    assert weights["fine"] > 0.5
    assert weights["coarse"] > 0.5


def test_weighted_product_weights_stay_within_bounds():
    y, probas = _synthetic()
    weights = WeightedProductFusion(PARENTS, max_weight=0.3).fit(probas, y).weights_
    assert all(0.0 <= w <= 0.3 for w in weights.values())


def test_weighted_validation_log_loss_is_no_worse_than_the_product():
    y, probas = _synthetic()
    weighted = WeightedProductFusion(PARENTS).fit(probas, y).predict_proba(probas)
    product = ProductFusion(PARENTS).fit(probas, y).predict_proba(probas)
    assert log_loss(weighted, y) <= log_loss(product, y) + 1e-9
    assert log_loss(weighted, y) < 0.9 * log_loss(product, y)  # the noise view hurts the plain product


def test_fused_probabilities_are_distributions():
    y, probas = _synthetic()
    fused = WeightedProductFusion(PARENTS).fit(probas, y).predict_proba(probas)
    assert fused.shape == (len(y), N_FINE)
    np.testing.assert_allclose(fused.sum(axis=1), 1.0)


def test_auto_reports_scores_for_both_and_picks_the_lowest():
    y, probas = _synthetic()
    fuser, choice = choose_fusion("auto", PARENTS, probas, y, folds=np.arange(len(y)) % 3)
    scores = choice["cross_fitted_val_log_loss"]
    assert choice["folds"] == 3
    assert set(scores) == {"product", "weighted"}
    assert choice["strategy"] == min(scores, key=scores.get) == "weighted"
    assert type(fuser) is WeightedProductFusion
    assert choice["weights"] == fuser.weights_


def test_named_strategy_is_fitted_and_scored_alone():
    y, probas = _synthetic()
    fuser, choice = choose_fusion("product", PARENTS, probas, y, folds=np.arange(len(y)) % 2)
    assert type(fuser) is ProductFusion
    assert choice["strategy"] == "product"
    assert list(choice["cross_fitted_val_log_loss"]) == ["product"]


def test_unknown_strategy_raises():
    y, probas = _synthetic(n=20)
    with pytest.raises(ValueError, match=r"unknown fusion strategy 'mean'; choose from \['product', 'weighted'\] or 'auto'"):
        choose_fusion("mean", PARENTS, probas, y, folds=np.arange(len(y)) % 2)


def test_cross_fitting_refuses_a_single_fold():
    y, probas = _synthetic(n=20)
    with pytest.raises(ValueError, match="two folds or more"):
        choose_fusion("auto", PARENTS, probas, y, folds=np.zeros(len(y), dtype=int))


def test_missing_view_raises_naming_it():
    y, probas = _synthetic(n=20)
    del probas["coarse"]
    with pytest.raises(ValueError, match=r"fusion needs predictions of view\(s\) \['coarse'\]"):
        ProductFusion(PARENTS).fit(probas, y).predict_proba(probas)


def test_missing_view_raises_when_fitting_weights():
    y, probas = _synthetic(n=20)
    del probas["noise"]
    with pytest.raises(ValueError, match=r"view\(s\) \['noise'\]"):
        WeightedProductFusion(PARENTS).fit(probas, y)


def test_log_loss_of_a_known_case():
    proba = np.array([[0.5, 0.5], [0.25, 0.75]])
    assert log_loss(proba, np.array([0, 1])) == pytest.approx(-(np.log(0.5) + np.log(0.75)) / 2)
