"""Permutation feature importance: how much a model's test scores fall when one column's values
are shuffled among the rows, breaking its link to the label (or value) while keeping its
distribution."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from granular.core.evaluate import log_loss, regression_metrics


def _class_scores(proba: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    return float((proba.argmax(axis=1) == y).mean()), log_loss(proba, y)


def _value_scores(values: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """R² and RMSE of a regressor's (N, 1) values."""
    metrics = regression_metrics(y, values[:, 0])
    return metrics["r2"], metrics["rmse"]


def permutation_importance(
    predict_proba: Callable[[pd.DataFrame], np.ndarray], frame: pd.DataFrame, y: np.ndarray, columns: list[str],
    repeats: int = 3, seed: int = 0, regression: bool = False,
) -> list[dict]:
    """For each of `columns`, over `repeats` shuffles: the mean fall in accuracy (and its
    standard deviation) and the mean rise in log-loss; one row per column, the largest rise in
    log-loss (the finer measure) first. A `regression` model (its (N, 1) values): the fall in R²
    and the rise in RMSE instead. A column the model does not need scores about 0; a negative
    score is noise."""
    if len(frame) == 0:
        raise ValueError("permutation importance needs rows")
    score = _value_scores if regression else _class_scores
    drop, rise = ("r2_drop", "rmse_rise") if regression else ("accuracy_drop", "log_loss_rise")
    headline, loss = score(predict_proba(frame), y)
    rng = np.random.default_rng(seed)
    scores = []
    for column in columns:
        falls, rises = [], []
        for _ in range(repeats):
            shuffled = frame.copy()
            shuffled[column] = frame[column].to_numpy()[rng.permutation(len(frame))]
            changed_headline, changed_loss = score(predict_proba(shuffled), y)
            falls.append(headline - changed_headline)
            rises.append(changed_loss - loss)
        scores.append({
            "column": column, drop: float(np.mean(falls)), f"{drop}_std": float(np.std(falls)), rise: float(np.mean(rises)),
        })
    return sorted(scores, key=lambda row: -row[rise])
