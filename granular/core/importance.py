"""Permutation feature importance: how much a model's test scores fall when one column's values
are shuffled among the rows, breaking its link to the label while keeping its distribution."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from granular.core.evaluate import log_loss


def permutation_importance(
    predict_proba: Callable[[pd.DataFrame], np.ndarray], frame: pd.DataFrame, y: np.ndarray, columns: list[str],
    repeats: int = 3, seed: int = 0,
) -> list[dict]:
    """For each of `columns`, over `repeats` shuffles: the mean fall in accuracy (and its
    standard deviation) and the mean rise in log-loss; one row per column, the largest rise in
    log-loss (the finer measure) first. A column the model does not need scores about 0; a
    negative score is noise."""
    if len(frame) == 0:
        raise ValueError("permutation importance needs rows")
    proba = predict_proba(frame)
    accuracy, loss = float((proba.argmax(axis=1) == y).mean()), log_loss(proba, y)
    rng = np.random.default_rng(seed)
    scores = []
    for column in columns:
        falls, rises = [], []
        for _ in range(repeats):
            shuffled = frame.copy()
            shuffled[column] = frame[column].to_numpy()[rng.permutation(len(frame))]
            changed = predict_proba(shuffled)
            falls.append(accuracy - float((changed.argmax(axis=1) == y).mean()))
            rises.append(log_loss(changed, y) - loss)
        scores.append({
            "column": column, "accuracy_drop": float(np.mean(falls)), "accuracy_drop_std": float(np.std(falls)),
            "log_loss_rise": float(np.mean(rises)),
        })
    return sorted(scores, key=lambda row: -row["log_loss_rise"])
