"""Test-set metrics for each view and the fused model."""
from __future__ import annotations

import numpy as np


def log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-probability of the true class (nan on no examples)."""
    if len(y) == 0:
        return float("nan")
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None))))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(true, predicted) counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def macro_f1(matrix: np.ndarray) -> float:
    """Mean over classes of F1; a class never predicted nor present counts as 0."""
    tp = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    denominator = predicted + actual
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float(f1.mean())


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict:
    if len(y_true) == 0:
        raise ValueError("cannot evaluate on an empty test split")
    y_pred = proba.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, proba.shape[1])
    return {
        "accuracy": float((y_pred == y_true).mean()),
        "macro_f1": macro_f1(matrix),
        "n": int(len(y_true)),
        "confusion": matrix,
    }
