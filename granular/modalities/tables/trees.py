"""Gradient-boosted trees on a table: scikit-learn's HistGradientBoostingClassifier, or its
HistGradientBoostingRegressor for a regression target.

Trees are what a table model has to beat, so they serve twice: as the learner of a table view
with `learner: hgb` (one per network of the view, as an MLP would be), and as every table run's
boosted-trees baseline, which the evaluation compares with and the fusion may use. The numeric
columns go in as they are (imputed, as a TableArrays holds them; not scaled, which trees do not
need); each categorical column goes in as a categorical feature, its UNKNOWN code (and any code
outside the training categories) as missing.

HistGradientBoostingClassifier 1.9 takes at most `max_bins` (255) categories per categorical
feature and, contrary to its documentation, treats a negative code as one more category rather
than as missing, hence the mapping to NaN here. A column with more categories than that is
given to the trees as its codes in order (an ordinal numeric feature) instead: `ordinal_columns`
names them.

Saved with joblib (a pickle, as MLflow's scikit-learn flavour saves models): load only the
files of a project or a registry you trust.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import joblib
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from granular.config import TreesConfig
from granular.core.evaluate import log_loss
from granular.nn.inputs import TableArrays
from granular.store.atomic import atomic_path

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
class BoostedTrees:
    """Fitted boosted trees and what they need to predict a TableArrays; saved as one file."""

    model: HistGradientBoostingClassifier | HistGradientBoostingRegressor
    num_classes: int
    cardinalities: tuple[int, ...]  # of the training table's categorical columns
    ordinal_columns: tuple[int, ...]  # categorical columns given as ordinal numbers (too many categories)
    fit_seconds: float
    threads: int | None = None  # OpenMP threads for fitting and predicting; None = every core
    learner: ClassVar[str] = "hgb"

    def _features(self, table: TableArrays) -> np.ndarray:
        if table.codes.shape[1] != len(self.cardinalities):
            raise ValueError(
                f"the trees were fitted on {len(self.cardinalities)} categorical columns, "
                f"the table has {table.codes.shape[1]}"
            )
        return _features(table, self.cardinalities)

    def _figures(self, train: TableArrays) -> dict:
        """What a network's epoch record says of the whole fit: the seconds of the fit, training
        rows a second, and the boosting rounds kept."""
        return {"epoch": 1, "rounds": int(self.model.n_iter_), "seconds": self.fit_seconds,
                "images_per_s": len(train) / max(self.fit_seconds, 1e-9)}

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            joblib.dump(self, tmp)


@dataclass
class Trees(BoostedTrees):
    """Boosted trees of classes."""

    def predict_proba(self, table: TableArrays) -> np.ndarray:
        """(N, num_classes) float32; a class the training split lacked gets probability 0."""
        features = self._features(table)
        probabilities = np.zeros((len(table), self.num_classes), dtype=np.float32)
        if len(table):
            with threadpool_limits(limits=self.threads, user_api="openmp"):
                probabilities[:, self.model.classes_] = self.model.predict_proba(features)
        return probabilities

    def outputs(self, table: TableArrays) -> np.ndarray:
        """What a view of classes answers: the probabilities."""
        return self.predict_proba(table)

    def record(self, train: TableArrays, y_train: np.ndarray, val: TableArrays, y_val: np.ndarray) -> dict:
        """What a network's epoch record says, for the whole fit: losses, validation accuracy and
        the figures of the fit."""
        val_out, train_out = self.predict_proba(val), self.predict_proba(train)
        return {
            **self._figures(train), "train_loss": log_loss(train_out, y_train), "val_loss": log_loss(val_out, y_val),
            "val_accuracy": float((val_out.argmax(axis=1) == y_val).mean()),
        }


@dataclass
class ValueTrees(BoostedTrees):
    """Boosted regression trees of a target's value: its one "class" is the value."""

    def predict(self, table: TableArrays) -> np.ndarray:
        """(N, 1) float64 predicted values."""
        features = self._features(table)
        values = np.zeros((len(table), 1))
        if len(table):
            with threadpool_limits(limits=self.threads, user_api="openmp"):
                values[:, 0] = self.model.predict(features)
        return values

    def outputs(self, table: TableArrays) -> np.ndarray:
        """What a view of the value answers: the values."""
        return self.predict(table)

    def record(self, train: TableArrays, y_train: np.ndarray, val: TableArrays, y_val: np.ndarray) -> dict:
        """What a network's epoch record says, for the whole fit: mean squared errors, the
        validation RMSE and the figures of the fit."""
        val_out, train_out = self.predict(val), self.predict(train)
        val_mse = float(np.mean((val_out[:, 0] - y_val) ** 2)) if len(y_val) else float("nan")
        return {**self._figures(train), "train_loss": float(np.mean((train_out[:, 0] - y_train) ** 2)), "val_loss": val_mse,
                "val_rmse": float(np.sqrt(val_mse))}


def load_trees(path: Path) -> BoostedTrees:
    trees = joblib.load(path)
    if not isinstance(trees, BoostedTrees):
        raise ValueError(f"{path} holds a {type(trees).__name__}, not boosted trees")
    return trees


def fit_trees(
    train: TableArrays,
    y_train: np.ndarray,
    val: TableArrays | None,
    y_val: np.ndarray | None,
    num_classes: int,
    settings: TreesConfig = TreesConfig(),
    seed: int = 0,
    threads: int | None = None,
    class_weights: np.ndarray | None = None,
) -> Trees:
    """Fit trees on `train`. With `settings.early_stopping`, boosting stops once the validation
    loss has not improved for 10 rounds: on `val` when given (its rows of classes the training
    split lacks are left out), else on 10% of `train`. Without it, `settings.max_iter` rounds.
    `class_weights` (num_classes,) weighs each class's rows (granular/core/class_weights.py).

    `threads` caps the OpenMP threads (None = every core): on a machine busy with other work,
    OpenMP's spinning threads slow a small fit down several times over."""
    y_train = _check_labels(y_train, len(train), num_classes, "train")
    if not len(train):
        raise ValueError("train: the training table has no rows")
    mask = _categorical_mask(train)
    model = HistGradientBoostingClassifier(
        **_settings(settings, mask, seed),
        class_weight=None if class_weights is None else {k: float(w) for k, w in enumerate(class_weights)},
    )
    kept_val = None
    if settings.early_stopping and val is not None:
        if y_val is None:
            raise ValueError("val: a validation table was given without its labels")
        y_val = _check_labels(y_val, len(val), num_classes, "val")
        kept_val = np.isin(y_val, y_train)
    return _fit(Trees, model, num_classes, train, y_train, val, y_val, kept_val, threads)


def fit_regression_trees(
    train: TableArrays,
    y_train: np.ndarray,
    val: TableArrays | None,
    y_val: np.ndarray | None,
    settings: TreesConfig = TreesConfig(),
    seed: int = 0,
    threads: int | None = None,
) -> ValueTrees:
    """`fit_trees` for a regression target: a HistGradientBoostingRegressor of the squared
    error, early stopping on the validation rows' squared error."""
    y_train = _check_values(y_train, len(train), "train")
    if not len(train):
        raise ValueError("train: the training table has no rows")
    model = HistGradientBoostingRegressor(**_settings(settings, _categorical_mask(train), seed))
    kept_val = None
    if settings.early_stopping and val is not None:
        if y_val is None:
            raise ValueError("val: a validation table was given without its values")
        y_val = _check_values(y_val, len(val), "val")
        kept_val = np.ones(len(val), dtype=bool)
    return _fit(ValueTrees, model, 1, train, y_train, val, y_val, kept_val, threads)


def _check_values(y: np.ndarray, rows: int, split: str) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (rows,):
        raise ValueError(f"{split}: {rows} rows of features but target values of shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError(f"{split}: target value {y[~np.isfinite(y)][0]} at row {int(np.flatnonzero(~np.isfinite(y))[0])} is not finite")
    return y


def _settings(settings: TreesConfig, mask: np.ndarray, seed: int) -> dict:
    return {
        "max_iter": settings.max_iter, "learning_rate": settings.learning_rate, "max_leaf_nodes": settings.max_leaf_nodes,
        "min_samples_leaf": settings.min_samples_leaf, "l2_regularization": settings.l2_regularization,
        "categorical_features": mask, "early_stopping": settings.early_stopping, "random_state": seed,
    }


def _fit(kind: type[BoostedTrees], model, num_classes: int, train: TableArrays, y_train, val, y_val, kept_val, threads) -> BoostedTrees:
    """Fit on `train`, stopping early on the `kept_val` rows of `val` where there are any."""
    fit_kwargs = {}
    if kept_val is not None and kept_val.any():
        fit_kwargs = {"X_val": _features(val[kept_val], train.cardinalities), "y_val": y_val[kept_val]}
    mask = _categorical_mask(train)
    started = time.perf_counter()
    with threadpool_limits(limits=threads, user_api="openmp"):
        model.fit(_features(train, train.cardinalities), y_train, **fit_kwargs)
    seconds = time.perf_counter() - started
    ordinal = tuple(int(i) for i in np.flatnonzero(~mask[train.numeric.shape[1]:]))
    return kind(model, num_classes, tuple(train.cardinalities), ordinal, seconds, threads)
