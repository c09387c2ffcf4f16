"""Fusion of a regression target's views into one predicted value, by stacking (Breiman's
stacked regressions): a linear combination of the views' predictions with non-negative weights
and an intercept, fitted on the validation rows.

Each input becomes one number per row: a view of the value (level fine) and the boosted-trees
baseline give their predicted value; a view of a binned level gives the value its bin
probabilities imply, sum_k p(bin k) x the training rows' mean value in bin k. Non-negative
weights keep the combination an honest average of the views' answers (least squares on a few
hundred validation rows would otherwise cancel correlated views against each other).

`auto` compares stacking with the best single input (no combination at all) by their RMSE on
validation folds each did not see, as the class fusions are chosen (granular/core/fusion.py).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

STRATEGIES = ("stacking", "best_view")


def input_values(outputs: dict[str, np.ndarray], bin_means: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """Each input's value per row: a value view's (N, 1) output, or a bin view's (N, bins)
    probabilities times its bins' mean values."""
    return {
        name: (out @ np.asarray(bin_means[name]) if name in bin_means else out[:, 0]).astype(np.float64)
        for name, out in outputs.items()
    }


def _matrix(values: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    missing = [name for name in names if name not in values]
    if missing:
        raise ValueError(f"value fusion needs predictions of {missing}")
    return np.column_stack([values[name] for name in names])


def fit_stacking(values: dict[str, np.ndarray], y: np.ndarray) -> dict:
    """Non-negative weights and an intercept minimising the squared error on (values, y)."""
    names = sorted(values)
    x = _matrix(values, names)
    x_mean, y_mean = x.mean(axis=0), float(np.mean(y))
    weights, _ = nnls(x - x_mean, np.asarray(y, dtype=np.float64) - y_mean)
    return {"weights": dict(zip(names, weights.tolist())), "intercept": y_mean - float(x_mean @ weights)}


def fit_best_view(values: dict[str, np.ndarray], y: np.ndarray) -> dict:
    """The one input of the lowest squared error, as it is."""
    errors = {name: float(np.mean((v - y) ** 2)) for name, v in values.items()}
    best = min(sorted(errors), key=errors.get)
    return {"weights": {best: 1.0}, "intercept": 0.0}


def predict(record: dict, values: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) fused values of a fitted record."""
    names = list(record["weights"])
    return _matrix(values, names) @ np.asarray([record["weights"][n] for n in names]) + record["intercept"]


FITS = {"stacking": fit_stacking, "best_view": fit_best_view}


def cross_fitted_rmse(strategy: str, values: dict[str, np.ndarray], y: np.ndarray, folds: np.ndarray) -> float:
    """RMSE of `strategy` on each validation fold, fitted on the other folds."""
    predicted = np.empty(len(y))
    for fold in np.unique(folds):
        held = folds == fold
        record = FITS[strategy]({n: v[~held] for n, v in values.items()}, y[~held])
        predicted[held] = predict(record, {n: v[held] for n, v in values.items()})
    return float(np.sqrt(np.mean((predicted - y) ** 2)))


def choose(strategy: str, values: dict[str, np.ndarray], y: np.ndarray, folds: np.ndarray) -> dict:
    """The fitted fusion (`strategy`, or under auto the one of lower cross-fitted RMSE): its
    record (weights, intercept), a summary for people and the selection, with each candidate's
    cross-fitted RMSE and the reason for the pick."""
    if strategy not in (*STRATEGIES, "auto"):
        raise ValueError(f"a regression's fusion is stacking, best_view or auto, not {strategy!r}")
    y = np.asarray(y, dtype=np.float64)
    candidates = STRATEGIES if strategy == "auto" else (strategy,)
    count = len(np.unique(folds))
    scores = {name: cross_fitted_rmse(name, values, y, folds) for name in candidates} if count > 1 else {}
    chosen = min(candidates, key=lambda name: scores[name]) if scores else candidates[0]
    if scores:
        reason = f"{chosen}: cross-fitted validation RMSE {scores[chosen]:.4g} over {count} folds" + "".join(
            f", {name} {score:.4g}" for name, score in scores.items() if name != chosen
        )
    else:
        reason = f"{chosen}: one validation fold, nothing to cross-fit over"
    fitted = FITS[chosen](values, y)
    return {
        "strategy": chosen, **fitted,
        "summary": {"weights": fitted["weights"], "intercept": fitted["intercept"]},  # for people: the log rounds it
        "selection": {"rule": "lowest cross-fitted validation RMSE", "folds": count, "scores": scores, "winner": chosen,
                      "reason": reason},
    }
