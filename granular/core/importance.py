"""Permutation feature importance: how much a model's test scores fall when one column's values
are shuffled among the rows, breaking its link to the label (or value) while keeping its
distribution."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterator

import numpy as np
import pandas as pd

# Values of the stacked shuffled copies one predict call reads at most (about 32 MB of float64):
# a call per column costs the model's fixed overhead hundreds of times on a wide table.
BATCH_VALUES = 1 << 22

Progress = Callable[[int, int], None]  # (columns scored, columns to score)


@dataclass(frozen=True)
class ImportanceScores:
    """How a problem (granular/problems/) scores a model's answers for importance: `measure`
    (answers, truth) -> (headline score, loss), and the names of their fall and rise."""

    measure: Callable[[np.ndarray, np.ndarray], tuple[float, float]]
    drop: str  # "accuracy_drop", "r2_drop"
    rise: str  # "log_loss_rise", "rmse_rise"


def columns_to_score(columns: list[str], max_columns: int, seed: int) -> list[str]:
    """All of `columns` when there are at most `max_columns`; else a random sample of
    `max_columns` of them, drawn from `seed`, in their own order."""
    if len(columns) <= max_columns:
        return list(columns)
    chosen = np.random.default_rng(seed).choice(len(columns), size=max_columns, replace=False)
    return [columns[k] for k in sorted(chosen)]


def permutation_importance(
    predict: Callable[[pd.DataFrame], np.ndarray], frame: pd.DataFrame, y: np.ndarray, columns: list[str],
    scores: ImportanceScores, repeats: int = 3, seed: int = 0, batch_values: int = BATCH_VALUES,
    progress: Progress | None = None,
) -> list[dict]:
    """For each of `columns`, over `repeats` shuffles: the mean fall in the headline score
    (accuracy, a regression's R²; and its standard deviation) and the mean rise in the loss
    (log-loss, RMSE), as `scores` measures them; one row per column, the largest rise in the
    loss (the finer measure) first. A column the model does not need scores about 0; a
    negative score is noise.

    The shuffled copies of the frame (one per column and repeat, the shuffles drawn from `seed`
    column by column) are stacked, as many as `batch_values` values hold, and scored by one
    `predict` call; `progress` hears after each call how many columns are done."""
    if len(frame) == 0:
        raise ValueError("permutation importance needs rows")
    rows = len(frame)
    headline, loss = scores.measure(predict(frame), y)
    shuffles = _shuffles(columns, rows, repeats, seed)
    copies_per_call = max(1, batch_values // max(1, rows * frame.shape[1]))
    falls, rises = {column: [] for column in columns}, {column: [] for column in columns}
    done = 0
    while batch := list(islice(shuffles, copies_per_call)):
        answers = predict(_stacked_copies(frame, batch))
        for k, (column, _) in enumerate(batch):
            changed_headline, changed_loss = scores.measure(answers[k * rows : (k + 1) * rows], y)
            falls[column].append(headline - changed_headline)
            rises[column].append(changed_loss - loss)
        done += len(batch)
        if progress is not None:
            progress(done // repeats, len(columns))
    table = [
        {"column": column, scores.drop: float(np.mean(falls[column])), f"{scores.drop}_std": float(np.std(falls[column])),
         scores.rise: float(np.mean(rises[column]))}
        for column in columns
    ]
    return sorted(table, key=lambda row: -row[scores.rise])


def _shuffles(columns: list[str], rows: int, repeats: int, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """Each column's `repeats` permutations of the rows, drawn column by column from `seed`."""
    rng = np.random.default_rng(seed)
    for column in columns:
        for _ in range(repeats):
            yield column, rng.permutation(rows)


def _stacked_copies(frame: pd.DataFrame, shuffles: list[tuple[str, np.ndarray]]) -> pd.DataFrame:
    """One copy of `frame` per (column, permutation) of `shuffles`, one under the other, each
    with that column's values in that permutation's order."""
    rows = len(frame)
    stacked = frame.iloc[np.tile(np.arange(rows), len(shuffles))].reset_index(drop=True)  # (copies * rows, columns)
    order = {}  # column -> the row of `frame` each stacked row takes its value from
    for k, (column, permutation) in enumerate(shuffles):
        order.setdefault(column, np.tile(np.arange(rows), len(shuffles)))[k * rows : (k + 1) * rows] = permutation
    for column, taken in order.items():
        stacked[column] = frame[column].to_numpy()[taken]
    return stacked
