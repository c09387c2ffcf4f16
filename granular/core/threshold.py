"""A decision threshold for a target of two classes: the cut on one class's probability above
which a model answers that class, chosen on validation predictions for a declared metric. With
a rare class, the most probable class (a cut of 0.5) answers the common one nearly always; a
lower cut trades some accuracy for finding the rare class."""
from __future__ import annotations

import numpy as np

THRESHOLD_METRICS = ("accuracy", "balanced_accuracy", "f1")


def _scores(metric: str, tp: np.ndarray, fp: np.ndarray, positives: int, negatives: int) -> np.ndarray:
    """`metric` at each cut, from the counts of true and false positives there."""
    fn, tn = positives - tp, negatives - fp
    if metric == "accuracy":
        return (tp + tn) / (positives + negatives)
    if metric == "balanced_accuracy":
        return (tp / max(positives, 1) + tn / max(negatives, 1)) / 2
    if metric == "f1":  # of the positive class
        return np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(len(tp)), where=(2 * tp + fp + fn) > 0)
    raise ValueError(f"unknown threshold metric {metric!r}; known: {', '.join(THRESHOLD_METRICS)}")


def choose_threshold(proba: np.ndarray, positive: np.ndarray, metric: str) -> dict:
    """The cut t on `proba` (the positive class's probability, one per example; answer positive
    where proba >= t) whose `metric` on these examples is best, halfway between two neighbouring
    probabilities; of equal cuts, the nearest to 0.5. Returns the cut, its score and the
    score of the plain cut at 0.5."""
    proba, positive = np.asarray(proba, dtype=np.float64), np.asarray(positive, dtype=bool)
    if len(proba) == 0 or positive.all() or not positive.any():
        raise ValueError("a threshold is chosen on validation examples of both classes")
    order = np.argsort(-proba, kind="stable")
    ranked, hits = proba[order], positive[order]
    # Cut k answers positive for the k most probable examples: only between distinct probabilities.
    distinct = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True]) + 1
    tp = np.cumsum(hits)[distinct - 1]
    fp = distinct - tp
    cuts = np.r_[(ranked[distinct[:-1] - 1] + ranked[distinct[:-1]]) / 2, ranked[-1] / 2]
    scores = _scores(metric, tp, fp, int(positive.sum()), int((~positive).sum()))
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    pick = best[np.argmin(np.abs(cuts[best] - 0.5))]
    at_half = proba >= 0.5
    half = _scores(metric, np.array([int((at_half & positive).sum())]), np.array([int((at_half & ~positive).sum())]),
                   int(positive.sum()), int((~positive).sum()))[0]
    return {"value": float(cuts[pick]), "metric": metric, "validation": float(scores[pick]), "validation_at_half": float(half)}


def apply_threshold(proba: np.ndarray, threshold: dict | None) -> np.ndarray:
    """(N, 2) probabilities -> (N,) class ids: the positive class where its probability reaches
    the cut, else the other; without a threshold, the most probable class."""
    if threshold is None:
        return proba.argmax(axis=1)
    positive = threshold["positive_index"]
    return np.where(proba[:, positive] >= threshold["value"], positive, 1 - positive)
