"""Permutation feature importance: how much a model's test scores fall when one column's values
are shuffled among the rows, breaking its link to the label (or value) while keeping its
distribution."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ImportanceScores:
    """How a problem (granular/problems/) scores a model's answers for importance: `measure`
    (answers, truth) -> (headline score, loss), and the names of their fall and rise."""

    measure: Callable[[np.ndarray, np.ndarray], tuple[float, float]]
    drop: str  # "accuracy_drop", "r2_drop"
    rise: str  # "log_loss_rise", "rmse_rise"


def permutation_importance(
    predict: Callable[[pd.DataFrame], np.ndarray], frame: pd.DataFrame, y: np.ndarray, columns: list[str],
    scores: ImportanceScores, repeats: int = 3, seed: int = 0,
) -> list[dict]:
    """For each of `columns`, over `repeats` shuffles: the mean fall in the headline score
    (accuracy, a regression's R²; and its standard deviation) and the mean rise in the loss
    (log-loss, RMSE), as `scores` measures them; one row per column, the largest rise in the
    loss (the finer measure) first. A column the model does not need scores about 0; a
    negative score is noise."""
    if len(frame) == 0:
        raise ValueError("permutation importance needs rows")
    score, drop, rise = scores.measure, scores.drop, scores.rise
    headline, loss = score(predict(frame), y)
    rng = np.random.default_rng(seed)
    scores = []
    for column in columns:
        falls, rises = [], []
        for _ in range(repeats):
            shuffled = frame.copy()
            shuffled[column] = frame[column].to_numpy()[rng.permutation(len(frame))]
            changed_headline, changed_loss = score(predict(shuffled), y)
            falls.append(headline - changed_headline)
            rises.append(changed_loss - loss)
        scores.append({
            "column": column, drop: float(np.mean(falls)), f"{drop}_std": float(np.std(falls)), rise: float(np.mean(rises)),
        })
    return sorted(scores, key=lambda row: -row[rise])
