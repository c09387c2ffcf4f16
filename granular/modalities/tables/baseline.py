"""The strong baseline for tables: scikit-learn's histogram gradient boosting on the same splits.

Gradient-boosted trees are what a table model has to beat, so every table run can set its views
and their fusion next to one. The numeric columns go in as they are (imputed, as a TableArrays
holds them; not scaled, which trees do not need); each categorical column goes in as a
categorical feature, its UNKNOWN code (and any code outside the training categories) as missing.

HistGradientBoostingClassifier 1.9 takes at most `max_bins` (255) categories per categorical
feature and, contrary to its documentation, treats a negative code as one more category rather
than as missing, hence the mapping to NaN here. A column with more categories than that is
given to the trees as its codes in order (an ordinal numeric feature) instead: `ordinal_columns`
names them.

The pipeline fits it in the evaluate step, on the run's splits, and keeps its scores, not the
model: it is a yardstick, never served.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from granular.nn.inputs import TableArrays

MAX_CATEGORIES = 255  # HistGradientBoostingClassifier's max_bins: most categories a feature may have


def _features(table: TableArrays, cardinalities: tuple[int, ...]) -> np.ndarray:
    """(N, F + C) float64: the numeric columns, then each categorical column's codes with any
    code the training split did not know (UNKNOWN, or beyond its cardinality) as NaN."""
    codes = table.codes.astype(np.float64)
    known = (table.codes >= 0) & (table.codes < np.asarray(cardinalities, dtype=np.int64))
    codes[~known] = np.nan
    return np.hstack([table.numeric.astype(np.float64), codes])


def _categorical_mask(table: TableArrays) -> np.ndarray:
    numeric = np.zeros(table.numeric.shape[1], dtype=bool)
    categorical = np.asarray(table.cardinalities, dtype=np.int64) <= MAX_CATEGORIES
    return np.concatenate([numeric, categorical])


def _check_labels(y: np.ndarray, rows: int, num_classes: int, split: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (rows,):
        raise ValueError(f"{split}: {rows} rows of features but labels of shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        bad = int(np.flatnonzero((y < 0) | (y >= num_classes))[0])
        raise ValueError(f"{split}: label {y[bad]} at row {bad} is outside 0..{num_classes - 1}")
    return y.astype(np.int64)


@dataclass
class Baseline:
    """A fitted HistGradientBoostingClassifier and what it needs to predict a TableArrays."""

    model: HistGradientBoostingClassifier
    num_classes: int
    cardinalities: tuple[int, ...]  # of the training table's categorical columns
    ordinal_columns: tuple[int, ...]  # categorical columns given as ordinal numbers (too many categories)
    fit_seconds: float
    threads: int | None = None  # OpenMP threads for fitting and predicting; None = every core

    def predict_proba(self, table: TableArrays) -> np.ndarray:
        """(N, num_classes) float32; a class the training split lacked gets probability 0."""
        if table.codes.shape[1] != len(self.cardinalities):
            raise ValueError(
                f"the baseline was fitted on {len(self.cardinalities)} categorical columns, "
                f"the table has {table.codes.shape[1]}"
            )
        probabilities = np.zeros((len(table), self.num_classes), dtype=np.float32)
        if len(table):
            with threadpool_limits(limits=self.threads, user_api="openmp"):
                probabilities[:, self.model.classes_] = self.model.predict_proba(_features(table, self.cardinalities))
        return probabilities


def fit_baseline(
    train: TableArrays,
    y_train: np.ndarray,
    val: TableArrays | None,
    y_val: np.ndarray | None,
    num_classes: int,
    seed: int = 0,
    max_iter: int = 300,
    early_stopping: bool = True,
    learning_rate: float = 0.1,
    max_leaf_nodes: int = 31,
    threads: int | None = None,
) -> Baseline:
    """Fit the baseline on `train`. With `early_stopping`, boosting stops once the validation
    loss has not improved for 10 iterations: on `val` when given (its rows of classes the
    training split lacks are left out), else on 10% of `train`. Without it, `max_iter` trees.

    `threads` caps the OpenMP threads (None = every core): on a machine busy with other work,
    OpenMP's spinning threads slow a small fit down several times over."""
    y_train = _check_labels(y_train, len(train), num_classes, "train")
    if not len(train):
        raise ValueError("train: the training table has no rows")
    mask = _categorical_mask(train)
    model = HistGradientBoostingClassifier(
        max_iter=max_iter,
        learning_rate=learning_rate,
        max_leaf_nodes=max_leaf_nodes,
        categorical_features=mask,
        early_stopping=early_stopping,
        random_state=seed,
    )
    fit_kwargs = {}
    if early_stopping and val is not None:
        if y_val is None:
            raise ValueError("val: a validation table was given without its labels")
        y_val = _check_labels(y_val, len(val), num_classes, "val")
        seen = np.isin(y_val, y_train)
        if seen.any():
            fit_kwargs = {"X_val": _features(val[seen], train.cardinalities), "y_val": y_val[seen]}
    started = time.perf_counter()
    with threadpool_limits(limits=threads, user_api="openmp"):
        model.fit(_features(train, train.cardinalities), y_train, **fit_kwargs)
    seconds = time.perf_counter() - started
    ordinal = tuple(int(i) for i in np.flatnonzero(~mask[train.numeric.shape[1]:]))
    return Baseline(model, num_classes, tuple(train.cardinalities), ordinal, seconds, threads)
