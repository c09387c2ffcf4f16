"""Test-set metrics for each view and the fused model.

Point estimates (accuracy, balanced accuracy, per-class and macro F1, ROC- and PR-AUC,
calibration, hierarchical scores; a regression's RMSE, MAE and R²), their bootstrap confidence
intervals, McNemar's test of two models' accuracies (a paired test of squared errors for a
regression's, a paired bootstrap test of any other score), and inference latency. Pure numpy
(scipy for the test's distributions): each function takes arrays and returns numbers.
"""
from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from granular.core.taxonomy import Taxonomy

ECE_BINS = 15
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
MCNEMAR_EXACT_BELOW = 25  # discordant pairs under which the chi-square approximation is poor


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


def per_class_metrics(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support (true examples) of each class of a confusion matrix;
    a ratio with nothing to divide by (a class never predicted, or absent) is 0."""
    tp = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)

    def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
        return np.divide(numerator, denominator, out=np.zeros_like(tp), where=denominator > 0)

    return {
        "precision": ratio(tp, predicted),
        "recall": ratio(tp, actual),
        "f1": ratio(2 * tp, predicted + actual),  # = 2PR / (P + R), defined where P or R is
        "support": actual.astype(np.int64),
    }


def macro_f1(matrix: np.ndarray) -> float:
    """Mean over classes of F1; a class never predicted nor present counts as 0."""
    return float(per_class_metrics(matrix)["f1"].mean())


def balanced_accuracy(matrix: np.ndarray) -> float:
    """Mean recall over the classes present: a model that answers the majority class for every
    example scores 1/classes, however rare the others are."""
    present = matrix.sum(axis=1) > 0
    return float(per_class_metrics(matrix)["recall"][present].mean())


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, y_pred: np.ndarray | None = None) -> dict:
    """Accuracy, balanced accuracy, macro-F1 and the confusion matrix of the answers `y_pred`
    (by default the most probable class of each example)."""
    if len(y_true) == 0:
        raise ValueError("cannot evaluate on an empty test split")
    y_pred = proba.argmax(axis=1) if y_pred is None else y_pred
    matrix = confusion_matrix(y_true, y_pred, proba.shape[1])
    return {
        "accuracy": float((y_pred == y_true).mean()),
        "balanced_accuracy": balanced_accuracy(matrix),
        "macro_f1": macro_f1(matrix),
        "n": int(len(y_true)),
        "confusion": matrix,
    }


def ranking_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """How well the probabilities rank each class's examples above the rest, whatever the
    decision: ROC-AUC (one class against the rest, macro over the classes; for two classes the
    usual AUC) and PR-AUC (average precision: for two classes of the rarer one in `y_true`, the
    class an imbalance hides; else macro). Classes absent from `y_true` are left out; with fewer
    than two present, both are nan."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    present = np.unique(y_true)
    if len(present) < 2:
        return {"roc_auc": float("nan"), "pr_auc": float("nan")}
    truth = y_true[:, None] == present[None, :]  # (N, present classes)
    scores = proba[:, present].astype(np.float64)
    if proba.shape[1] == 2:
        rare = int(np.argmin(truth.sum(axis=0)))
        return {
            "roc_auc": float(roc_auc_score(truth[:, rare], scores[:, rare])),
            "pr_auc": float(average_precision_score(truth[:, rare], scores[:, rare])),
        }
    return {
        "roc_auc": float(np.mean([roc_auc_score(truth[:, k], scores[:, k]) for k in range(len(present))])),
        "pr_auc": float(np.mean([average_precision_score(truth[:, k], scores[:, k]) for k in range(len(present))])),
    }


def calibration(proba: np.ndarray, y_true: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Expected calibration error of the top-class confidence over `bins` equal-width bins
    ((0, 1/bins], ..., a confidence of 0 in the first), and the non-empty bins for a
    reliability diagram: their edges, mean confidence, accuracy and count."""
    if len(y_true) == 0:
        raise ValueError("cannot measure calibration on no examples")
    if bins < 1:
        raise ValueError(f"calibration needs at least one bin, got {bins}")
    confidence = proba.max(axis=1).astype(float)
    correct = (proba.argmax(axis=1) == y_true).astype(float)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    filled = np.flatnonzero(count)
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins)[filled] / count[filled]
    accuracy = np.bincount(index, weights=correct, minlength=bins)[filled] / count[filled]
    ece = float(np.sum(count[filled] / len(y_true) * np.abs(accuracy - mean_confidence)))
    return {
        "ece": ece,
        "bins": [
            {"lower": b / bins, "upper": (b + 1) / bins, "confidence": float(c), "accuracy": float(a),
             "count": int(count[b])}
            for b, c, a in zip(filled.tolist(), mean_confidence, accuracy)
        ],
    }


def _shared_ancestors(taxonomy: Taxonomy, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """(N, levels) bool: the true and predicted fine classes have the same class at that level
    (column 0: the fine class itself)."""
    return np.stack(
        [taxonomy.map_labels(y_true, level) == taxonomy.map_labels(y_pred, level) for level in taxonomy.levels], axis=1
    )


def hierarchical_metrics(taxonomy: Taxonomy, y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Hierarchical precision, recall and F1 of fine predictions (Kiritchenko et al.: each label
    set is augmented with the label's ancestors at every level, the root left out; micro-averaged
    over examples), the error count, and the mistake severity: the mean over the errors of the
    levels climbed from the fine class until the true and predicted classes share an ancestor
    (1 = same parent one level up; the number of levels when only the root is shared)."""
    if len(y_true) == 0:
        raise ValueError("cannot evaluate on an empty test split")
    shared = _shared_ancestors(taxonomy, y_true, y_pred)
    # One class per level on either side, so |predicted augmented| = |true augmented| = levels.
    overlap, predicted_size, true_size = shared.sum(), shared.size, shared.size
    precision, recall = overlap / predicted_size, overlap / true_size
    f1 = 2 * precision * recall / (precision + recall) if overlap else 0.0
    errors = ~shared[:, 0]
    scores = {
        "hierarchical_precision": float(precision),
        "hierarchical_recall": float(recall),
        "hierarchical_f1": float(f1),
        "errors": int(errors.sum()),
    }
    if errors.any():  # in a tree, classes that differ at a level differ at every finer one
        scores["mistake_severity"] = float((~shared[errors]).sum(axis=1).mean())
    return scores


# Above this many test examples, the bootstrap draws groups of examples instead of examples, so
# its (resamples x draws) matrix stays ~80 MB however large the test split (see `Resamples`).
MAX_BOOTSTRAP_DRAWS = 20_000


@dataclass(frozen=True)
class Resamples:
    """Bootstrap resamples of n test examples, shared by every model so that their intervals
    are comparable and their differences paired.

    Up to MAX_BOOTSTRAP_DRAWS examples, each resample draws n examples with replacement. Beyond,
    the examples are dealt at random into that many equal groups and each resample draws groups
    with replacement: a sum over a resample is then the sum of its groups' sums. The groups are
    random, so this estimates the same sampling distribution, in memory that does not grow with n.
    """

    counts: np.ndarray  # (resamples, draws) float32: how often each example (or group) is drawn
    group: np.ndarray | None  # (n,) each example's group; None: every example is drawn alone

    @property
    def resamples(self) -> int:
        return len(self.counts)

    def totals(self, values: np.ndarray) -> np.ndarray:
        """Per-example values (n,) or (n, K) summed within each group: what `counts` multiplies."""
        values = np.asarray(values, dtype=np.float32)
        if self.group is None:
            return values
        summed = np.zeros((self.counts.shape[1], *values.shape[1:]), dtype=np.float64)
        np.add.at(summed, self.group, values)
        return summed.astype(np.float32)

    def sums(self, values: np.ndarray) -> np.ndarray:
        """(resamples, ...) the sum of `values` over each resample's examples."""
        return (self.counts @ self.totals(values)).astype(float)


def resample_counts(n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Resamples:
    """`resamples` bootstrap resamples of n examples (of groups of them beyond
    MAX_BOOTSTRAP_DRAWS), drawn from `seed`."""
    if n < 1 or resamples < 1:
        raise ValueError(f"bootstrap needs examples and resamples, got n={n}, resamples={resamples}")
    rng = np.random.default_rng(seed)
    group = None
    draws = n
    if n > MAX_BOOTSTRAP_DRAWS:
        draws = MAX_BOOTSTRAP_DRAWS
        group = (rng.permutation(n) % draws).astype(np.int64)
    picked = rng.integers(0, draws, size=(resamples, draws))
    rows = np.arange(resamples)[:, None] * draws
    counts = np.bincount((picked + rows).ravel(), minlength=resamples * draws).reshape(resamples, draws)
    # Small integers: exact in float32, and the products with it are BLAS-fast.
    return Resamples(counts=counts.astype(np.float32), group=group)


def resampled_means(resamples: Resamples, values: np.ndarray) -> np.ndarray:
    """(resamples,) mean of per-example `values` (1/0 for right/wrong: accuracy) in each resample."""
    return resamples.sums(values) / resamples.sums(np.ones(len(values), dtype=np.float32))


def resampled_macro_f1(resamples: Resamples, y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(resamples,) macro-F1 of each resample, classes as in `macro_f1`."""
    classes = np.arange(num_classes)
    true_onehot = (y_true[:, None] == classes).astype(np.float32)  # (N, K)
    pred_onehot = (y_pred[:, None] == classes).astype(np.float32)
    tp = resamples.sums(true_onehot * pred_onehot)  # (resamples, K), exact counts
    denominator = resamples.sums(true_onehot) + resamples.sums(pred_onehot)
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return f1.mean(axis=1)


def resampled_balanced_accuracy(resamples: Resamples, y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(resamples,) balanced accuracy of each resample: the mean recall of the classes it holds."""
    classes = np.arange(num_classes)
    true_onehot = (y_true[:, None] == classes).astype(np.float32)  # (N, K)
    found = resamples.sums(true_onehot * (y_pred[:, None] == classes))  # (resamples, K)
    actual = resamples.sums(true_onehot)
    recall = np.divide(found, actual, out=np.full_like(found, np.nan), where=actual > 0)
    return np.nanmean(recall, axis=1)


# Resamples weighed at once by the ranking scores: (N, chunk) float32 stays about 80 MB.
_RANKING_CHUNK_CELLS = 20_000_000


def resampled_ranking(resamples: Resamples, y_true: np.ndarray, proba: np.ndarray) -> dict[str, np.ndarray]:
    """(resamples,) ROC-AUC and PR-AUC of each resample, as `ranking_metrics` defines them (the
    same classes; a class a resample does not hold is left out of its macro mean, nan where none
    is left). Each class's scores are sorted once; a resample is the weight it gives each
    example (how often it draws it), so its AUCs are weighted cumulative sums over that order."""
    present = np.unique(y_true)
    if len(present) < 2:
        nan = np.full(resamples.resamples, np.nan)
        return {"roc_auc": nan, "pr_auc": nan}
    truth = y_true[:, None] == present[None, :]
    if proba.shape[1] == 2:  # the rarer class in the whole test split, as the point estimate
        ranked = [int(np.argmin(truth.sum(axis=0)))]
    else:
        ranked = range(len(present))
    by_example = np.ascontiguousarray(resamples.counts.T)  # (draws, resamples): an example's weights in a row
    roc, pr = zip(*(
        _weighted_aucs(by_example, resamples.group, truth[:, k], proba[:, present[k]].astype(np.float64)) for k in ranked
    ))
    with warnings.catch_warnings():  # a resample holding one class only: nan, without a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return {"roc_auc": np.nanmean(np.stack(roc), axis=0), "pr_auc": np.nanmean(np.stack(pr), axis=0)}


def _weighted_aucs(
    by_example: np.ndarray, group: np.ndarray | None, positive: np.ndarray, score: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(resamples,) ROC-AUC and average precision of one class's `score` against the rest, each
    resample weighing an example by how often it draws it (`by_example`: (draws, resamples), the
    row of example i is `group[i]`, or i without groups); sklearn's with that sample_weight.

    Every sum is over the positives, each with the weight of the examples scored below it (a
    cumulative sum over the negatives sorted once): ROC-AUC counts the negatives under each
    positive, a tied one as half; average precision is each positive's share of the positives
    times the precision of the cut at its score."""
    row = np.arange(len(score)) if group is None else group
    pos_score, neg_score = np.sort(score[positive]), np.sort(score[~positive])
    pos_rows = row[positive][np.argsort(score[positive], kind="stable")]
    neg_rows = row[~positive][np.argsort(score[~positive], kind="stable")]
    # For each positive: how many negatives (and positives) score strictly below it, and how many tie it.
    neg_under = np.searchsorted(neg_score, pos_score, side="left")
    neg_tied = np.searchsorted(neg_score, pos_score, side="right") - neg_under
    pos_under = np.searchsorted(pos_score, pos_score, side="left")
    chunk = max(1, _RANKING_CHUNK_CELLS // len(score))
    roc, pr = [], []
    for first in range(0, by_example.shape[1], chunk):
        columns = slice(first, first + chunk)
        # Exclusive cumulative weights (a zero row first): integer sums, exact in float32.
        neg_cum = _exclusive_cumsum(by_example[neg_rows, columns])  # (negatives + 1, chunk)
        pos_weight = by_example[pos_rows, columns].astype(np.float64)  # (positives, chunk)
        pos_cum = _exclusive_cumsum(by_example[pos_rows, columns])
        neg_below = neg_cum[neg_under].astype(np.float64)
        neg_at = neg_cum[neg_under + neg_tied].astype(np.float64) - neg_below
        pos_below = pos_cum[pos_under].astype(np.float64)
        pos_total, neg_total = pos_cum[-1].astype(np.float64), neg_cum[-1].astype(np.float64)
        true_above = pos_total - pos_below  # what a cut at the positive's score finds, and calls positive
        called = true_above + neg_total - neg_below
        with np.errstate(divide="ignore", invalid="ignore"):
            roc.append(np.einsum("pr,pr->r", pos_weight, neg_below + neg_at / 2) / (pos_total * neg_total))
            precision = np.divide(true_above, called, out=np.zeros_like(called), where=called > 0)
            pr.append(np.einsum("pr,pr->r", pos_weight, precision) / pos_total)
    return np.concatenate(roc), np.concatenate(pr)


def _exclusive_cumsum(rows: np.ndarray) -> np.ndarray:
    """(M + 1, K) the sums of the first 0, 1, ..., M rows of `rows` (M, K)."""
    out = np.zeros((len(rows) + 1, rows.shape[1]), dtype=rows.dtype)
    if rows.shape[1] < _ROW_AT_A_TIME_FROM:
        np.cumsum(rows, axis=0, out=out[1:])
        return out
    for i, row in enumerate(rows):  # one vector add a row: ~5x numpy's cumsum down a wide axis 0
        np.add(out[i], row, out=out[i + 1])
    return out


# Rows at least this wide are summed a row at a time; narrower ones (a huge test split's chunks
# of few resamples) by numpy, where the loop's cost per row would dominate.
_ROW_AT_A_TIME_FROM = 128


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` interval of bootstrap samples (percentile method); samples of an
    undefined score (nan: a resample without a class an AUC needs) are left out."""
    samples = np.asarray(samples)[~np.isnan(samples)]
    if len(samples) == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def paired_bootstrap_test(difference: np.ndarray, observed: float) -> dict:
    """Is a difference of two models' scores (A minus B, `observed` on the whole test split; its
    resampled values from the resamples both were scored on) more than chance? Two-sided: twice
    the share of the resampled differences on the other side of 0 from the observed one (0
    counts as the other side), at most 1 and at least 1/(resamples + 1), the least a bootstrap
    of that many resamples can tell. Resamples whose score is undefined (nan) are left out."""
    difference = np.asarray(difference, dtype=np.float64)
    difference = difference[~np.isnan(difference)]
    if observed == 0 or len(difference) == 0:
        p_value = 1.0
    else:
        other_side = np.mean(difference <= 0) if observed > 0 else np.mean(difference >= 0)
        p_value = float(min(1.0, max(2 * other_side, 1 / (len(difference) + 1))))
    return {"difference": float(observed), "p_value": p_value, "resamples": int(len(difference))}


def regression_metrics(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² (1 - squared error / the squared error of the mean; 0 for a constant
    target predicted exactly, -inf otherwise)."""
    error = np.asarray(predicted, dtype=np.float64) - y_true
    spread = float(np.sum((y_true - y_true.mean()) ** 2))
    squared = float(np.sum(error**2))
    r2 = 1 - squared / spread if spread > 0 else (0.0 if squared == 0 else float("-inf"))
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error))), "r2": r2}


def resampled_regression(resamples: Resamples, y_true: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """(resamples,) RMSE, MAE and R² of each resample. Computed on the values standardised by
    the whole test split's mean and spread (R² does not change, RMSE and MAE scale back), so
    the float32 sums stay exact enough for values of any size."""
    y_true = np.asarray(y_true, dtype=np.float64)
    centre, scale = y_true.mean(), y_true.std() or 1.0
    y = (y_true - centre) / scale
    error = (np.asarray(predicted, dtype=np.float64) - y_true) / scale
    n = resamples.sums(np.ones(len(y)))
    squared = resamples.sums(error**2)
    spread = resamples.sums(y**2) - resamples.sums(y) ** 2 / n
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(spread > 0, 1 - squared / spread, 0.0)
    return {"rmse": np.sqrt(squared / n) * scale, "mae": resamples.sums(np.abs(error)) / n * scale, "r2": r2}


def paired_squared_error_test(error_a: np.ndarray, error_b: np.ndarray) -> dict:
    """Do models A and B, predicting the same rows with these errors, differ in squared error?
    A paired t-test of the rows' differences in squared error (the Diebold-Mariano test with a
    squared loss, the rows independent), two-sided. `mse_gain`: B's mean squared error minus
    A's (positive where A is better); b and c count the rows A and B predict strictly closer."""
    from scipy import stats

    error_a, error_b = np.abs(np.asarray(error_a, dtype=np.float64)), np.abs(np.asarray(error_b, dtype=np.float64))
    difference = error_b**2 - error_a**2
    if np.all(difference == difference[0]):  # no spread: the same errors (p 1), or a constant gap
        p_value = 1.0 if difference[0] == 0 else 0.0
        statistic = 0.0 if difference[0] == 0 else float("inf") * np.sign(difference[0])
    else:
        statistic, p_value = (float(v) for v in stats.ttest_1samp(difference, 0.0))
    return {
        "b": int(np.sum(error_a < error_b)), "c": int(np.sum(error_b < error_a)), "mse_gain": float(difference.mean()),
        "statistic": statistic, "p_value": p_value, "method": "paired t on squared errors",
    }


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's test of two models on the same examples. b: examples A gets right and B wrong,
    c: the reverse. Exact two-sided binomial test when b + c < 25, else chi-square with
    continuity correction (1 degree of freedom)."""
    from scipy import stats

    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    if b + c < MCNEMAR_EXACT_BELOW:
        statistic = float(min(b, c))
        p_value = min(1.0, 2 * float(stats.binom.cdf(min(b, c), b + c, 0.5)))  # b + c = 0 gives 1
        method = "exact"
    else:
        statistic = (abs(b - c) - 1) ** 2 / (b + c)
        p_value = float(stats.chi2.sf(statistic, df=1))
        method = "chi2"
    return {"b": b, "c": c, "statistic": float(statistic), "p_value": p_value, "method": method}


def measure_latency(
    predict: Callable[[np.ndarray], object],
    images: np.ndarray,
    batch_size: int = 256,
    repeats: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Time `predict` over `images` in batches: one warm-up batch (lazy initialisation, caches),
    then the median of `repeats` passes. Milliseconds per batch and images per second."""
    if len(images) == 0 or batch_size < 1 or repeats < 1:
        raise ValueError(
            f"latency needs images, batch_size >= 1 and repeats >= 1, got {len(images)} images, "
            f"batch_size={batch_size}, repeats={repeats}"
        )
    batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
    seconds = statistics.median(time_passes(predict, batches, repeats, clock))
    return {"ms_per_batch": 1000 * seconds / len(batches), "images_per_s": len(images) / seconds}


def measure_side_by_side(
    predicts: dict[str, Callable[[np.ndarray], object]],
    images: np.ndarray,
    batch_size: int = 256,
    rounds: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict]:
    """measure_latency of several models in turns: one warm-up batch each, then `rounds` rounds
    in which each model passes over `images` once, the order rotating from round to round; each
    model's median pass. The machine's other work falls on every model alike, so their ratios
    hold where a figure measured apart would drift."""
    if len(images) == 0 or batch_size < 1 or rounds < 1:
        raise ValueError(
            f"latency needs images, batch_size >= 1 and rounds >= 1, got {len(images)} images, "
            f"batch_size={batch_size}, rounds={rounds}"
        )
    batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
    for predict in predicts.values():
        predict(batches[0])
    names = list(predicts)
    passes: dict[str, list[float]] = {name: [] for name in names}
    for number in range(rounds):
        for name in names[number % len(names):] + names[: number % len(names)]:
            started = clock()
            for batch in batches:
                predicts[name](batch)
            passes[name].append(clock() - started)
    return {
        name: {"ms_per_batch": 1000 * statistics.median(seconds) / len(batches),
               "images_per_s": len(images) / statistics.median(seconds)}
        for name, seconds in passes.items()
    }


def time_passes(
    predict: Callable[[np.ndarray], object],
    batches: list[np.ndarray],
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Seconds of each of `repeats` passes of `predict` over `batches`, after one untimed
    warm-up call on the first batch. One batch of one image: the latency of each request."""
    predict(batches[0])
    passes = []
    for _ in range(repeats):
        started = clock()
        for batch in batches:
            predict(batch)
        passes.append(clock() - started)
    return passes
