"""Step evaluate: every view, the fusion, the student and any baseline on the test split, with
intervals, per-class scores, calibration, hierarchical scores (a regression target's RMSE, MAE
and R²), feature importance and inference latency (data/evaluation/)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from granular.config import Config, ViewConfig
from granular.core import evaluate, plots
from granular.core.importance import permutation_importance
from granular.core.taxonomy import Taxonomy
from granular.core.threshold import apply_threshold
from granular.modalities import load_view_model, modality_for
from granular.core.bins import FINE
from granular.modalities.base import MAJORITY, MEAN
from granular.modalities.experts import read_view_spec
from granular.pipeline.distill import STUDENT
from granular.pipeline.fuse import BASELINE_FIGURES, BASELINE_PREDICTIONS
from granular.pipeline.reads import project_taxonomy, specialist_class_ids, split_rows, split_values, view_probas
from granular.serving.bundle import FUSION_FILE
from granular.store.atomic import atomic_dir, read_npz, write_csv, write_json
from granular.store.paths import ProjectPaths

LATENCY_IMAGES = 512  # test images timed per model: a few seconds in all, on a CPU too
LATENCY_BATCH = 256
IMPORTANCE_REPEATS = 3  # shuffles of each column
VALUE_COLUMNS = ("level", "rmse", "rmse_ci_low", "rmse_ci_high", "mae", "mae_ci_low", "mae_ci_high", "r2", "r2_ci_low", "r2_ci_high")
COMPARISON_COLUMNS = (  # model quality only: latency is a figure of the machine
    "accuracy", "accuracy_ci_low", "accuracy_ci_high", "balanced_accuracy", "macro_f1", "macro_f1_ci_low",
    "macro_f1_ci_high", "roc_auc", "pr_auc", "ece", "hierarchical_f1", "mistake_severity",
)


def evaluate_step(config: Config, paths: ProjectPaths) -> dict:
    """Every view and the fusion on the test split: accuracy and macro-F1 with bootstrap 95%
    intervals (the same resamples for every model), per-class scores, calibration, and for fine
    models the hierarchical scores and the accuracy they imply at coarser levels; the fusion
    against the best single fine view (paired interval, McNemar's test); inference latency."""
    taxonomy = project_taxonomy(config, paths)
    metrics = (_evaluate_values if config.regression else _evaluate_classes)(config, paths, taxonomy)
    served = _served_models(config, paths)  # loaded once, for the importance and the latency
    rows = modality_for(config).importance_rows(config, paths)
    if rows is not None:
        write_json(paths.importance, _feature_importance(config, taxonomy, served, *rows))
    write_json(paths.metrics, metrics)
    # Figures of this machine, beside the metrics, so that metrics.json is the same for the same
    # data, settings and code, and `dvc metrics diff` shows model quality alone.
    figures = json.loads((paths.baselines_dir / BASELINE_FIGURES).read_text())
    latency = _latency(config, paths, served) | {name: figures for name, figures in figures.items() if figures}
    for name, seconds in _training_seconds(config, paths, figures).items():
        latency[name] = {**latency.get(name, {}), "train_seconds": seconds}
    write_json(paths.latency, latency)
    return {**metrics, "latency": latency}


def _evaluate_classes(config: Config, paths: ProjectPaths, taxonomy: Taxonomy) -> dict:
    """The scores of class predictions (written to data/evaluation/), and metrics.json's content."""
    y_fine = split_rows(paths, "test")["label"]
    test_probas = view_probas(config, paths, "test_proba")
    entries = [(v.name, v.level, test_probas[v.name]) for v in config.views.values()]
    entries.append(("fused", taxonomy.fine, read_npz(paths.fused_dir / "predictions.npz")["test_proba"]))
    # A target of two classes may be decided by a threshold (the fusion record's): the fused
    # model's answers are then those, as served.
    decided = {"fused": json.loads((paths.fused_dir / FUSION_FILE).read_text()).get("threshold")}
    if config.distill.enabled:
        entries.append((STUDENT, taxonomy.fine, read_npz(paths.student_dir / "predictions.npz")["test_proba"]))
    baselines = read_npz(paths.baselines_dir / BASELINE_PREDICTIONS)  # what the views and fusion must beat
    for name, proba in baselines.items():
        entries.append((name, taxonomy.fine, proba))
    resamples = evaluate.resample_counts(len(y_fine))
    specialists = specialist_class_ids(config, taxonomy)
    test, details = {}, {}
    for name, level, proba in entries:
        if name in specialists:  # scored on its classes' examples, its answers among its classes
            test[name], details[name] = _score_specialist(taxonomy, y_fine, proba, specialists[name])
        else:
            test[name], details[name] = _score_model(taxonomy, level, y_fine, proba, resamples, decided.get(name))
    fine_views = [v.name for v in config.views.values() if v.level == taxonomy.fine and v.name not in specialists]
    best = max(fine_views, key=lambda n: test[n]["accuracy"]) if fine_views else None
    metrics = {"modality": config.data.modality, "test": test, "best_single": best, "fine_views": fine_views}
    if specialists:  # scored on their classes' examples alone
        metrics["specialists"] = {name: [taxonomy.fine_names[k] for k in ids] for name, ids in specialists.items()}
    by_segment = _accuracy_by_segment(config, paths, taxonomy, y_fine, test_probas)
    if by_segment:
        metrics["segments"] = by_segment
    if best:
        metrics["fused_minus_best_single"] = test["fused"]["accuracy"] - test[best]["accuracy"]
        metrics.update(_fused_versus_best(details["fused"]["correct"], details[best]["correct"], best, resamples))
    for name in baselines:  # the boosted trees to beat, and the majority class as the floor
        metrics["majority" if name == MAJORITY else "baseline"] = {"model": name}
    metrics["bootstrap"] = {
        "resamples": resamples.resamples, "seed": evaluate.BOOTSTRAP_SEED, "confidence": evaluate.CONFIDENCE
    }
    _write_evaluation(paths, taxonomy, y_fine, test, details)
    return metrics


def _evaluate_values(config: Config, paths: ProjectPaths, taxonomy: Taxonomy) -> dict:
    """A regression target's scores: RMSE, MAE and R² with bootstrap 95% intervals of every
    model of the value (the views of level fine, the fusion, the boosted trees, the mean), the
    class scores of each view of a binned level; the fusion against the best view of the value
    in R² (paired interval) and by a paired test of their squared errors."""
    y, y_fine = split_values(paths, "test"), split_rows(paths, "test")["label"]
    outputs = view_probas(config, paths, "test_proba")
    baselines = read_npz(paths.baselines_dir / BASELINE_PREDICTIONS)
    values = {name: out[:, 0] for name, out in outputs.items() if config.learns_value(config.view(name))}
    values["fused"] = read_npz(paths.fused_dir / "predictions.npz")["test_proba"][:, 0]
    values |= {name: out[:, 0] for name, out in baselines.items()}
    resamples = evaluate.resample_counts(len(y))
    test, samples, details = {}, {}, {}
    for name in [*config.views, *values]:
        if name in values:
            test[name], samples[name] = _score_values(y, values[name], resamples)
        elif name not in test:
            level = config.view(name).level
            test[name], details[name] = _score_model(taxonomy, level, y_fine, outputs[name], resamples)
    value_views = [name for name in config.views if name in values]
    best = max(value_views, key=lambda n: test[n]["r2"]) if value_views else None
    metrics = {"modality": config.data.modality, "task": "regression", "test": test, "best_single": best,
               "fine_views": value_views}
    by_segment = _rmse_by_segment(config, paths, y, values)
    if by_segment:
        metrics["segments"] = by_segment
    if best:
        gain = samples["fused"]["r2"] - samples[best]["r2"]
        low, high = evaluate.percentile_interval(gain)
        metrics |= {
            "fused_minus_best_single": test["fused"]["r2"] - test[best]["r2"],
            "fused_minus_best_single_ci": {"low": low, "high": high},
            "paired_test": {"versus": best, **evaluate.paired_squared_error_test(values["fused"] - y, values[best] - y)},
        }
    for name in baselines:  # the boosted trees to beat, and the mean as the floor
        metrics[MEAN if name == MEAN else "baseline"] = {"model": name}
    metrics["bootstrap"] = {
        "resamples": resamples.resamples, "seed": evaluate.BOOTSTRAP_SEED, "confidence": evaluate.CONFIDENCE
    }
    _write_value_evaluation(paths, taxonomy, y, y_fine, test, values, details)
    return metrics


def _score_values(y: np.ndarray, predicted: np.ndarray, resamples: evaluate.Resamples) -> tuple[dict, dict]:
    """A model of a regression target's value: RMSE, MAE and R² with their intervals, and the
    resampled scores (for paired differences)."""
    scores = evaluate.regression_metrics(y, predicted)
    samples = evaluate.resampled_regression(resamples, y, predicted)
    for metric, resampled in samples.items():
        scores[f"{metric}_ci_low"], scores[f"{metric}_ci_high"] = evaluate.percentile_interval(resampled)
    return {**scores, "level": FINE}, samples


def _write_value_evaluation(
    paths: ProjectPaths, taxonomy: Taxonomy, y: np.ndarray, y_fine: np.ndarray, test: dict, values: dict, details: dict,
) -> None:
    """A regression's files: predicted against actual images of the models of the value (with
    the reliability diagrams of the binned views), confusion images of the binned views, every
    test prediction, the models compared."""
    def predicted_against_actual(staging: Path) -> None:
        for name, predicted in values.items():
            title = f"{name}: RMSE {test[name]['rmse']:.4g}, R² {test[name]['r2']:.4f}"
            plots.save_predicted_vs_actual_png(staging / f"{name}.png", y, predicted, title=title)

    _write_class_details(paths, test, details, predicted_against_actual)
    truth = {"actual": y} | {
        f"actual_{level}": np.asarray(taxonomy.names[level])[taxonomy.map_labels(y_fine, level)] for level in taxonomy.levels[1:]
    }
    predicted_bins = {name: np.asarray(d["classes"])[d["predicted"]] for name, d in details.items()}
    write_csv(paths.test_predictions, pd.DataFrame({**truth, **values, **predicted_bins}))
    write_csv(paths.comparison, pd.DataFrame([
        {"model": name, **{column: scores.get(column) for column in (*VALUE_COLUMNS, *COMPARISON_COLUMNS[:6])}}
        for name, scores in test.items()
    ]).dropna(axis=1, how="all"))


def _score_specialist(taxonomy: Taxonomy, y_fine: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> tuple[dict, dict]:
    """A specialist answers only which of its classes an example of them is: its scores on the
    test examples of those classes, its probabilities renormalised over them."""
    rows = np.isin(y_fine, classes)
    group = proba[rows][:, classes]
    own = np.zeros_like(proba[rows])
    own[:, classes] = group / group.sum(axis=1, keepdims=True)
    resamples = evaluate.resample_counts(int(rows.sum()))
    scores, details = _score_model(taxonomy, taxonomy.fine, y_fine[rows], own, resamples)
    # Macro-F1 over its own classes: the others, never its answer, would each count as 0.
    y_own, predicted_own = np.searchsorted(classes, y_fine[rows]), np.searchsorted(classes, details["predicted"])
    scores["macro_f1"] = evaluate.macro_f1(evaluate.confusion_matrix(y_own, predicted_own, len(classes)))
    samples = evaluate.resampled_macro_f1(resamples, y_own, predicted_own, len(classes))
    scores["macro_f1_ci_low"], scores["macro_f1_ci_high"] = evaluate.percentile_interval(samples)
    # Every test example's row of the predictions file: its answer among its classes.
    details["predicted"] = classes[proba[:, classes].argmax(axis=1)]
    return scores, details


def _score_model(
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
    intervals = {
        "accuracy": evaluate.resampled_means(resamples, correct),
        "macro_f1": evaluate.resampled_macro_f1(resamples, y, predicted, proba.shape[1]),
    }
    for metric, samples in intervals.items():
        scores[f"{metric}_ci_low"], scores[f"{metric}_ci_high"] = evaluate.percentile_interval(samples)
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
        "per_class": [
            {"class": name, **{key: values[i].item() for key, values in per_class.items()}}
            for i, name in enumerate(taxonomy.names[level])
        ],
        "reliability": calibration["bins"],
    }
    return scores, details


def _fused_versus_best(
    fused_correct: np.ndarray, best_correct: np.ndarray, best: str, resamples: evaluate.Resamples
) -> dict:
    """Is the fusion's gain over the best single view more than chance? A paired bootstrap
    interval of the accuracy difference, and McNemar's test on the examples they disagree on."""
    difference = evaluate.resampled_means(resamples, fused_correct.astype(np.float32) - best_correct)
    low, high = evaluate.percentile_interval(difference)
    return {
        "fused_minus_best_single_ci": {"low": low, "high": high},
        "mcnemar": {"versus": best, **evaluate.mcnemar(fused_correct, best_correct)},
    }


def _served_models(config: Config, paths: ProjectPaths) -> dict:
    """Every view's model and the fused model (and the student) as they serve, loaded from
    their files: `runtime`, `views` (name -> ViewModel), `fused`, `student` (or None)."""
    from granular.nn.device import select_runtime  # torch is imported only by the steps that need it
    from granular.serving.predict import FusedClassifier, load_fused

    runtime = select_runtime(precision=config.train.precision)
    return {
        "runtime": runtime,
        "views": {name: load_view_model(paths.model_dir(name), runtime) for name in config.views},
        "fused": load_fused(paths.fused_dir),
        "student": FusedClassifier.load(paths.student_dir) if config.distill.enabled else None,
    }


def _feature_importance(config: Config, taxonomy: Taxonomy, served: dict, raw, y_fine: np.ndarray) -> dict:
    """Permutation importance on the raw test examples: of each view's columns (a segment
    column too, which routes rows to experts) for the view, and of every input column for the
    fused model, as it serves."""
    runtime, scores, regression = served["runtime"], {}, config.regression
    for view in config.views.values():
        if regression and not config.learns_value(view):
            continue  # `y_fine` holds values: a binned view's importance is not measured
        model = served["views"][view.name]
        y = y_fine if regression else taxonomy.map_labels(y_fine, view.level)
        scores[view.name] = permutation_importance(
            lambda inputs, model=model: model.predict_proba(inputs, runtime), raw, y,
            model.reader.columns_read(), repeats=IMPORTANCE_REPEATS, seed=config.split.seed, regression=regression,
        )
    fused = served["fused"]
    scores["fused"] = permutation_importance(
        fused.predict_proba, raw, y_fine, list(fused.inputs.columns), repeats=IMPORTANCE_REPEATS, seed=config.split.seed,
        regression=regression,
    )
    return scores


def _latency(config: Config, paths: ProjectPaths, served: dict) -> dict:
    """Inference speed of each view's model and of the fused model (and the student), as they
    serve, on the first test images at full size."""
    images = modality_for(config).raw_inputs(config, paths, ("test",), LATENCY_IMAGES)["test"]
    runtime = served["runtime"]
    predictors = {
        name: (lambda batch, model=model: model.predict_proba(batch, runtime)) for name, model in served["views"].items()
    }
    predictors["fused"] = served["fused"].predict_proba
    if served["student"] is not None:
        predictors[STUDENT] = served["student"].predict_proba
    latency = {"device": runtime.name, "images": int(len(images)), "batch_size": LATENCY_BATCH}
    for name, predict in predictors.items():
        latency[name] = evaluate.measure_latency(predict, images, LATENCY_BATCH)
    return latency


def _training_seconds(config: Config, paths: ProjectPaths, baseline_figures: dict) -> dict[str, float]:
    """What each model's training took on this machine, so that its accuracy can be weighed
    against its cost: a view's networks' epochs; the fused model's, every input's (its views and
    the baselines it fuses; fitting the fusion itself takes seconds); the student's, the
    teacher's pass over the training examples and its own epochs."""
    seconds = {
        view: sum(epoch["seconds"] for epoch in json.loads((paths.model_dir(view) / "history.json").read_text()))
        for view in config.views
    }
    seconds["fused"] = sum(seconds.values()) + sum(f.get("train_seconds", 0.0) for f in baseline_figures.values())
    if config.distill.enabled:
        report = json.loads((paths.student_dir / "report.json").read_text())
        seconds[STUDENT] = report["teacher"]["seconds"] + report["student"]["train_seconds"]
    return seconds


def _write_class_details(
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


def _write_evaluation(paths: ProjectPaths, taxonomy: Taxonomy, y_fine: np.ndarray, test: dict, details: dict) -> None:
    """Confusion and reliability images, per-class scores, every test prediction, the models compared."""
    _write_class_details(paths, test, details)
    truth = {  # "actual" is the finest level, then "actual_<level>" for each coarser one
        "actual" if level == taxonomy.fine else f"actual_{level}":
            np.asarray(taxonomy.names[level])[taxonomy.map_labels(y_fine, level)]
        for level in taxonomy.levels
    }
    predicted_names = {name: np.asarray(d["classes"])[d["predicted"]] for name, d in details.items()}
    write_csv(paths.test_predictions, pd.DataFrame({**truth, **predicted_names}))
    write_csv(paths.comparison, pd.DataFrame([
        {"model": name, **{column: scores.get(column) for column in COMPARISON_COLUMNS}, **_recalls(taxonomy, scores["level"], details[name])}
        for name, scores in test.items()
    ]))


def _recalls(taxonomy: Taxonomy, level: str, detail: dict) -> dict[str, float]:
    """recall_<class> of a fine model: how many of each class's test examples it found (a
    minority class that a model never answers shows 0 here, however high its accuracy)."""
    if level != taxonomy.fine:
        return {}
    return {f"recall_{row['class']}": row["recall"] for row in detail["per_class"]}


def _rmse_by_segment(config: Config, paths: ProjectPaths, y: np.ndarray, values: dict[str, np.ndarray]) -> dict:
    """For each segmented view of a regression target's value, per test segment: its expert's
    RMSE next to the global model's."""
    def errors(view: ViewConfig) -> dict[str, np.ndarray] | None:
        if view.name not in values:
            return None
        out = {"rmse": values[view.name] - y}
        if view.global_name in values:
            out["global_rmse"] = values[view.global_name] - y
        return out

    return _scores_by_segment(config, paths, errors, lambda error: float(np.sqrt(np.mean(error ** 2))))



def _accuracy_by_segment(
    config: Config, paths: ProjectPaths, taxonomy: Taxonomy, y_fine: np.ndarray, test_probas: dict[str, np.ndarray]
) -> dict:
    """For each segmented view, per test segment: its expert's accuracy next to the global
    model's on the same examples, so the user sees where the experts earn their keep."""
    def right(view: ViewConfig) -> dict[str, np.ndarray]:
        y = taxonomy.map_labels(y_fine, view.level)
        out = {"accuracy": test_probas[view.name].argmax(1) == y}
        if view.global_name in test_probas:  # absent when it failed to train and the run went on
            out["global_accuracy"] = test_probas[view.global_name].argmax(1) == y
        return out

    return _scores_by_segment(config, paths, right, lambda correct: float(correct.mean()))


def _scores_by_segment(
    config: Config,
    paths: ProjectPaths,
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
        segment = read_npz(paths.view_split(view.name, "test"))["segment"]
        # A table's value under segments.min_size has no expert: the view's global network answers it.
        experts = read_view_spec(paths.model_dir(view.name))["reader"].get("expert_values")
        out[view.name] = {
            view.segments.segment_name(value): {
                "n": int((segment == value).sum()),
                "expert": experts is None or str(value) in experts,
                **{key: mean(score[segment == value]) for key, score in scores.items()},
            }
            for value in np.unique(segment)
        }
    return out
