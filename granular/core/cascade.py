"""A granularity cascade, as numbers: models ordered by cost, each answering the examples on which
its top class probability clears its threshold, the rest passed on; the last answers whatever
reaches it. Pure functions of every stage's probabilities of the same examples, which the
validation split has for every stage: the routing, its cost, and the cheapest thresholds that
keep the accuracy (granular/serving/cascade.py runs a fitted cascade on new inputs)."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

CASCADE = "cascade"  # its name among the models a run evaluates and serves
NEVER = math.inf  # a threshold no confidence clears: the stage is skipped, and costs nothing
COMBINATIONS = 20_000  # thresholds tried in all, shared among the stages before the last
_TOLERANCE = 1e-9  # accuracies are ratios of counts: float noise must not decide


def confidence(proba: np.ndarray) -> np.ndarray:
    """(N, classes) -> (N,) the top class probability: how sure the model is of its answer."""
    return proba.max(axis=1)


def answering_stage(confidences: list[np.ndarray], thresholds: tuple[float, ...]) -> np.ndarray:
    """(N,) the stage that answers each example: the first whose confidence clears its threshold,
    else the last. `confidences`: one (N,) array for each stage before the last."""
    stage = np.full(len(confidences[0]), len(confidences), dtype=np.int64)
    for number in reversed(range(len(confidences))):  # the earliest stage that clears wins
        stage[confidences[number] >= thresholds[number]] = number
    return stage


def routed_proba(probas: list[np.ndarray], stage: np.ndarray) -> np.ndarray:
    """(N, classes): each example's probabilities from the stage that answers it."""
    out = np.empty_like(probas[-1])
    for number, proba in enumerate(probas):
        out[stage == number] = proba[stage == number]
    return out


def reach(stage: np.ndarray, stages: int) -> np.ndarray:
    """(stages,) the share of the examples each stage runs on: those not answered before it."""
    answered = np.bincount(stage, minlength=stages) / max(len(stage), 1)
    return 1.0 - np.concatenate([[0.0], np.cumsum(answered)[:-1]])


def cost(stage: np.ndarray, thresholds: tuple[float, ...], seconds: np.ndarray) -> float:
    """Seconds per example: each stage's `seconds` per example it runs on, times the share it
    runs on; a stage whose threshold is NEVER is skipped."""
    runs = np.array([threshold != NEVER for threshold in thresholds] + [True])
    return float(np.sum(reach(stage, len(seconds)) * seconds * runs))


@dataclass(frozen=True)
class Point:
    """One setting of the thresholds and what it gives on the examples it was scored on."""

    thresholds: tuple[float, ...]
    accuracy: float
    seconds: float  # per example, as `cost`
    answered: tuple[float, ...]  # share of the examples each stage answers

    def to_json(self) -> dict:
        return {
            "thresholds": [None if t == NEVER else t for t in self.thresholds],
            "accuracy": self.accuracy, "seconds_per_example": self.seconds, "answered": list(self.answered),
        }


def score(
    confidences: list[np.ndarray], correct: list[np.ndarray], thresholds: tuple[float, ...], seconds: np.ndarray,
) -> Point:
    """What `thresholds` give: `correct`, one (N,) bool array per stage, says whether each
    stage's answer to each example is right."""
    stage = answering_stage(confidences, thresholds)
    right = np.choose(stage, correct) if len(stage) else np.zeros(0, dtype=bool)
    shares = np.bincount(stage, minlength=len(seconds)) / max(len(stage), 1)
    return Point(tuple(thresholds), float(right.mean()) if len(right) else 0.0, cost(stage, thresholds, seconds),
                 tuple(float(s) for s in shares))


def candidate_thresholds(confidence_values: np.ndarray, count: int) -> list[float]:
    """NEVER, and up to `count` - 1 thresholds among the confidences seen: every distinct one when
    they are few, else evenly spaced quantiles of them (answering 0% .. 100% of the examples)."""
    distinct = np.unique(confidence_values)
    if len(distinct) > count - 1:
        distinct = np.unique(np.quantile(confidence_values, np.linspace(0.0, 1.0, count - 1), method="lower"))
    return [NEVER, *(float(value) for value in distinct)]


@dataclass(frozen=True)
class Fit:
    chosen: Point
    frontier: list[Point]  # the cheapest point of every accuracy reached: the accuracy-cost curve


def fit_thresholds(probas: list[np.ndarray], y: np.ndarray, seconds: np.ndarray, max_drop: float) -> Fit:
    """The cheapest thresholds whose accuracy on these examples is at most `max_drop` below the
    last stage's alone, the full model's (ties: the more accurate, then the higher thresholds).
    Every combination of each stage's candidates is tried; the last stage alone is one of them.
    `probas`: each stage's probabilities of the examples, cheapest first; `seconds`: each
    stage's cost per example."""
    confidences = [confidence(proba) for proba in probas[:-1]]
    correct = [proba.argmax(axis=1) == y for proba in probas]
    per_stage = max(2, int(COMBINATIONS ** (1 / max(len(confidences), 1))))
    grids = [candidate_thresholds(values, per_stage) for values in confidences]
    points = [score(confidences, correct, thresholds, seconds) for thresholds in itertools.product(*grids)]
    least = float(correct[-1].mean()) - max_drop - _TOLERANCE
    allowed = [point for point in points if point.accuracy >= least]
    chosen = min(allowed, key=lambda p: (p.seconds, -p.accuracy, [-t for t in p.thresholds]))
    return Fit(chosen=chosen, frontier=_frontier(points))


def _frontier(points: list[Point]) -> list[Point]:
    """The points no other beats in both cost and accuracy, cheapest first."""
    out: list[Point] = []
    for point in sorted(points, key=lambda p: (p.seconds, -p.accuracy)):
        if not out or point.accuracy > out[-1].accuracy + _TOLERANCE:
            out.append(point)
    return out


def cross_fitted(probas: list[np.ndarray], y: np.ndarray, folds: np.ndarray, seconds: np.ndarray, max_drop: float) -> Point:
    """What fitting does on examples it has not seen: each fold routed by the thresholds fitted
    on the other folds (within `max_drop` of the full model's accuracy there); accuracy, cost
    and shares over every fold's examples together."""
    stage = np.empty(len(y), dtype=np.int64)
    seconds_in_all = 0.0
    for fold in np.unique(folds):
        rest, held = folds != fold, folds == fold
        thresholds = fit_thresholds([p[rest] for p in probas], y[rest], seconds, max_drop).chosen.thresholds
        stage[held] = answering_stage([confidence(p[held]) for p in probas[:-1]], thresholds)
        seconds_in_all += cost(stage[held], thresholds, seconds) * held.sum()
    right = np.choose(stage, [proba.argmax(axis=1) == y for proba in probas])
    shares = np.bincount(stage, minlength=len(probas)) / len(y)
    return Point((), float(right.mean()), float(seconds_in_all / len(y)), tuple(float(s) for s in shares))
