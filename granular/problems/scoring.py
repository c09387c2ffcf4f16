"""What both problems score alike: a model of classes (a classifier, or a regression's view of a
binned level) with its details, the files of class models, scores within each test segment of
a segmented view, and the bootstrap every interval is drawn with."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from granular.config import Config, ViewConfig
from granular.core import evaluate, plots
from granular.core.taxonomy import Taxonomy
from granular.core.threshold import apply_threshold
from granular.problems.base import ProjectReads
from granular.store.atomic import atomic_dir, write_json
from granular.store.paths import ProjectPaths


def interval_columns(scores: tuple[str, ...]) -> tuple[str, ...]:
    """Each score followed by its bootstrap interval: `<score>`, `<score>_ci_low`, `<score>_ci_high`."""
    return tuple(column for score in scores for column in (score, f"{score}_ci_low", f"{score}_ci_high"))


# The class scores, each with a bootstrap interval.
CLASS_SCORES = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "pr_auc")
COMPARISON_COLUMNS = (  # model quality only: latency is a figure of the machine
    *interval_columns(CLASS_SCORES), "ece", "hierarchical_f1", "mistake_severity",
)


def score_model(
    taxonomy: Taxonomy, level: str, y_fine: np.ndarray, proba: np.ndarray, resamples: evaluate.Resamples,
    threshold: dict | None = None,
) -> tuple[dict, dict]:
    """One model's flat scores (floats for MLflow, intervals as `<metric>_ci_low/_high`) and
    the details written beside them: confusion, per-class scores, reliability bins. Its answers
    are the most probable classes, or those of its decision `threshold`."""
    y = taxonomy.map_labels(y_fine, level)
    predicted = apply_threshold(proba, threshold)
    scores = evaluate.classification_metrics(y, proba, predicted) | evaluate.ranking_metrics(y, proba)
    matrix = scores.pop("confusion")
    if threshold is not None:
        scores["threshold"] = threshold["value"]
    correct = predicted == y
    samples = resampled_class_scores(resamples, y, proba, predicted)
    for metric, resampled in samples.items():
        scores[f"{metric}_ci_low"], scores[f"{metric}_ci_high"] = evaluate.percentile_interval(resampled)
    calibration = evaluate.calibration(proba, y)
    scores["ece"] = calibration["ece"]
    scores["level"] = level
    if level == taxonomy.fine:  # what a fine prediction implies one level up, and so on
        for coarser in taxonomy.levels[1:]:
            implied = taxonomy.map_labels(predicted, coarser) == taxonomy.map_labels(y_fine, coarser)
            scores[f"{coarser}_accuracy"] = float(implied.mean())
        if len(taxonomy.levels) > 1:  # one level: hierarchical F1 is accuracy, every mistake as severe
            scores.update(evaluate.hierarchical_metrics(taxonomy, y_fine, predicted))
    per_class = evaluate.per_class_metrics(matrix)
    details = {
        "classes": taxonomy.names[level],
        "confusion": matrix,
        "predicted": predicted,
        "correct": correct,
        "samples": samples,
        "per_class": [
            {"class": name, **{key: values[i].item() for key, values in per_class.items()}}
            for i, name in enumerate(taxonomy.names[level])
        ],
        "reliability": calibration["bins"],
    }
    return scores, details


def resampled_class_scores(
    resamples: evaluate.Resamples, y: np.ndarray, proba: np.ndarray, predicted: np.ndarray,
) -> dict[str, np.ndarray]:
    """Each class score of a model on every resample (what its interval is cut from, and what a
    paired difference of two models is drawn from)."""
    classes = proba.shape[1]
    return {
        "accuracy": evaluate.resampled_means(resamples, predicted == y),
        "balanced_accuracy": evaluate.resampled_balanced_accuracy(resamples, y, predicted, classes),
        "macro_f1": evaluate.resampled_macro_f1(resamples, y, predicted, classes),
        **evaluate.resampled_ranking(resamples, y, proba),
    }


def write_class_details(
    paths: ProjectPaths, test: dict, details: dict, more_reliability: Callable[[Path], None] | None = None,
) -> None:
    """Each class model's confusion image and matrix, reliability diagram (beside what
    `more_reliability` draws into the same folder) and per-class scores."""
    with atomic_dir(paths.confusion) as staging:
        for name, detail in details.items():
            plots.save_confusion_png(staging / f"{name}.png", detail["confusion"], detail["classes"], title=name)
            write_json(staging / f"{name}.json", {"classes": list(detail["classes"]), "matrix": detail["confusion"].tolist()})
    with atomic_dir(paths.reliability) as staging:
        if more_reliability is not None:
            more_reliability(staging)
        for name, detail in details.items():
            title = f"{name}: ECE {test[name]['ece']:.4f}"
            plots.save_reliability_png(staging / f"{name}.png", detail["reliability"], title=title)
    write_json(paths.per_class, {
        name: {"level": test[name]["level"], "per_class": detail["per_class"], "reliability": detail["reliability"]}
        for name, detail in details.items()
    })


def scores_by_segment(
    config: Config,
    reads: ProjectReads,
    per_example: Callable[[ViewConfig], dict[str, np.ndarray] | None],
    mean: Callable[[np.ndarray], float],
) -> dict:
    """Each segmented view's per-example scores (`per_example`: key -> one score per test
    example; None: the view has none) reduced by `mean` within each test segment, with the
    segment's size and whether an expert answered it."""
    out = {}
    for view in config.views.values():
        scores = per_example(view) if view.segments else None
        if scores is None:
            continue
        # A table's value under segments.min_size has no expert: the view's global network answers it.
        segment, experts = reads.test_segments(view)
        out[view.name] = {
            view.segments.segment_name(value): {
                "n": int((segment == value).sum()),
                "expert": experts is None or str(value) in experts,
                **{key: mean(score[segment == value]) for key, score in scores.items()},
            }
            for value in np.unique(segment)
        }
    return out


def best_in(models: list[str], test: dict, metric: str) -> str | None:
    """The model of `models` with the highest test `metric` (the first of a tie; an undefined
    score, nan, ranks last); None without models."""
    def score(name: str) -> float:
        value = test[name].get(metric, float("nan"))
        return float("-inf") if value != value else value

    return max(models, key=score) if models else None


def bootstrap_record(resamples: evaluate.Resamples) -> dict:
    """How every interval of the evaluation was drawn."""
    return {"resamples": resamples.resamples, "seed": evaluate.BOOTSTRAP_SEED, "confidence": evaluate.CONFIDENCE}
