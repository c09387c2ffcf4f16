"""Fusion of per-view probabilities into one fine-label prediction.

Every fuser shares one small interface: `fit(probas_by_view, y)` on validation predictions and
`predict_proba(probas_by_view)`. A view that predicts a coarser level contributes, for each fine
class, the probability of that class's ancestor at its level (the taxonomy's `parent` map).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from granular.evaluate import log_loss

_EPS = 1e-12


def _log_scores(probas_by_view: dict[str, np.ndarray], parents: dict[str, np.ndarray]) -> np.ndarray:
    """(V, N, F): log-probability each view gives each fine class (through its ancestor)."""
    missing = sorted(set(parents) - set(probas_by_view))
    if missing:
        raise ValueError(f"fusion needs predictions of view(s) {missing}")
    return np.stack([np.log(np.clip(probas_by_view[v][:, parents[v]], _EPS, None)) for v in parents])


def _softmax(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(scores)
    return exp / exp.sum(axis=1, keepdims=True)


class ProductFusion:
    """Hierarchical product: p(fine) ∝ Π_views p_view(ancestor of fine), every exponent 1."""

    def __init__(self, parents: dict[str, np.ndarray]):
        self.parents = parents

    def fit(self, probas_by_view: dict[str, np.ndarray], y: np.ndarray) -> "ProductFusion":
        self.weights_ = {view: 1.0 for view in self.parents}
        return self

    def predict_proba(self, probas_by_view: dict[str, np.ndarray]) -> np.ndarray:
        logs = _log_scores(probas_by_view, self.parents)
        w = np.array([self.weights_[v] for v in self.parents])
        return _softmax(np.tensordot(w, logs, axes=1))


class WeightedProductFusion(ProductFusion):
    """Hierarchical product with one learned exponent per view (a log-linear pool), chosen to
    minimise the log-loss on validation predictions; exponents are kept in [0, max_weight]."""

    def __init__(self, parents: dict[str, np.ndarray], max_weight: float = 5.0):
        super().__init__(parents)
        self.max_weight = max_weight

    def fit(self, probas_by_view: dict[str, np.ndarray], y: np.ndarray) -> "WeightedProductFusion":
        logs = _log_scores(probas_by_view, self.parents)  # (V, N, F)
        rows = np.arange(len(y))

        def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
            proba = _softmax(np.tensordot(w, logs, axes=1))  # (N, F)
            loss = -np.mean(np.log(np.clip(proba[rows, y], _EPS, None)))
            # d loss / d w_v = mean over examples of E_p[log p_v] - log p_v(y)
            grad = np.einsum("nf,vnf->v", proba, logs) / len(y) - logs[:, rows, y].mean(axis=1)
            return float(loss), grad

        start = np.ones(len(self.parents))
        found = minimize(
            loss_and_grad, start, jac=True, method="L-BFGS-B", bounds=[(0.0, self.max_weight)] * len(start)
        )
        self.weights_ = {view: float(w) for view, w in zip(self.parents, found.x)}
        return self


STRATEGIES = {"product": ProductFusion, "weighted": WeightedProductFusion}


def choose_fusion(
    strategy: str, parents: dict[str, np.ndarray], probas_by_view: dict[str, np.ndarray], y: np.ndarray,
    folds: np.ndarray,
) -> tuple[ProductFusion, dict]:
    """Fit the named strategy, or with 'auto' the one whose cross-fitted validation log-loss is
    lowest (fitted on all folds but one, scored on that one, for each fold); return the fuser,
    fitted on every fold, and the scores behind the choice."""
    candidates = list(STRATEGIES) if strategy == "auto" else [strategy]
    if strategy != "auto" and strategy not in STRATEGIES:
        raise ValueError(f"unknown fusion strategy {strategy!r}; choose from {sorted(STRATEGIES)} or 'auto'")
    if len(folds) != len(y) or len(np.unique(folds)) < 2:
        raise ValueError(f"cross-fitting needs a fold for each of the {len(y)} examples, and two folds or more")
    scores = {}
    for name in candidates:
        losses = []
        for fold in np.unique(folds):
            fit_rows, score_rows = folds != fold, folds == fold
            fuser = STRATEGIES[name](parents).fit({v: p[fit_rows] for v, p in probas_by_view.items()}, y[fit_rows])
            held_out = fuser.predict_proba({v: p[score_rows] for v, p in probas_by_view.items()})
            losses.append(log_loss(held_out, y[score_rows]))
        scores[name] = float(np.mean(losses))
    chosen = min(scores, key=scores.get)
    fuser = STRATEGIES[chosen](parents).fit(probas_by_view, y)
    record = {"strategy": chosen, "cross_fitted_val_log_loss": scores, "folds": int(len(np.unique(folds)))}
    return fuser, {**record, "weights": fuser.weights_}


def restore_fusion(choice: dict, parents: dict[str, np.ndarray]) -> ProductFusion:
    """The fitted fuser described by a record of choose_fusion (fusion.json)."""
    fuser = STRATEGIES[choice["strategy"]](parents)
    fuser.weights_ = {view: float(choice["weights"][view]) for view in parents}
    return fuser
