"""Regression: each model of the value answers a number; a view of a binned level answers the
probabilities of its bins, a classifier's (granular/problems/classes.py). Fused by stacking the
values or taking the best view's (granular/core/value_fusion.py), scored by RMSE, MAE and R²
with predicted against actual images; the floor is the training split's mean value, and the
fusion's gain over the best view of the value (in promotion.metric, R² by default) is tested by
a paired t-test of squared errors."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from granular.config import Config, ViewConfig
from granular.core import evaluate, plots, report, value_fusion
from granular.core.bins import FINE
from granular.core.importance import ImportanceScores
from granular.core.promotion import Check, above_floor, p_value_text
from granular.core.taxonomy import Taxonomy
from granular.problems.base import Problem, ProjectReads, TestOutputs, fitted_on
from granular.problems.classes import CLASSES
from granular.problems.scoring import (
    CLASS_SCORES, best_in, bootstrap_record, interval_columns, score_model, scores_by_segment, write_class_details,
)
from granular.store.atomic import write_csv
from granular.store.paths import ProjectPaths

# The baseline that answers the training split's mean value for every example: the floor.
MEAN = "mean"
VALUE_COLUMNS = ("level", *interval_columns(("rmse", "mae", "r2")))


def value_scores(values: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """R² and RMSE of a model's values, (N,) or (N, 1)."""
    metrics = evaluate.regression_metrics(y, np.reshape(values, len(y)))
    return metrics["r2"], metrics["rmse"]


class Values(Problem):
    name = "regression"
    headline = "r2"
    headline_label = "R²"
    gain_unit = " (R²)"
    floor = MEAN
    epoch_score = ("val_rmse", "validation RMSE")
    segment_score = ("rmse", "RMSE", ",.4f")  # fixed notation: a price's RMSE is never 1.2e+04
    report_images = ("reliability/fused.png",)  # its predicted against actual values
    importance = ImportanceScores(value_scores, "r2_drop", "rmse_rise")
    numeric_target = True

    def view_problem(self, config: Config, view: ViewConfig) -> Problem:
        """A view of the value (level fine) predicts it; a view of a binned level, its bins' classes."""
        return self if view.level == FINE else CLASSES

    def fuse(
        self, config: Config, taxonomy: Taxonomy, reads: ProjectReads, served: dict[str, dict[str, np.ndarray]],
    ) -> tuple[dict, dict[str, np.ndarray]]:
        """The views (and the served baseline) stacked into one value (granular/core/value_fusion.py),
        fitted on the validation split, or out of fold on a small table's training and validation
        rows; its test values, (N, 1)."""
        classes = taxonomy
        train = reads.rows("train")
        train_values = reads.values("train")
        bin_means = {}  # a view of a binned level: the training rows' mean value in each bin
        for view in config.views.values():
            if self.view_problem(config, view) is not self:
                bins = classes.map_labels(train["label"], view.level)
                bin_means[view.name] = [float(train_values[bins == k].mean()) for k in range(classes.num_classes(view.level))]
        rows = reads.fitting_rows()
        outputs = {"fusion": reads.fitting_outputs() | served["fusion"], "test": reads.outputs("test") | served["test"]}
        record = value_fusion.choose(
            config.fusion.strategy, value_fusion.input_values(outputs["fusion"], bin_means), reads.fitting_values(), rows["fold"],
        )
        record |= {
            "task": self.name, "bins": config.data.table.bins, "fitted_on": fitted_on(rows),
            "bin_means": {name: bin_means[name] for name in record["weights"] if name in bin_means},
        }
        test_values = value_fusion.predict(record, value_fusion.input_values(outputs["test"], bin_means))
        return record, {"test_proba": test_values[:, None]}

    def evaluate(
        self, config: Config, paths: ProjectPaths, taxonomy: Taxonomy, reads: ProjectReads, others: TestOutputs,
    ) -> dict:
        """RMSE, MAE and R² with bootstrap 95% intervals of every model of the value (the views of
        level fine, the fusion, the boosted trees, the mean), the class scores of each view of a
        binned level; the fusion against the best view of the value in R² (paired interval) and
        by a paired test of their squared errors."""
        y, y_fine = reads.values("test"), reads.rows("test")["label"]
        outputs = reads.outputs("test")
        baselines = others.baselines
        values = {name: out[:, 0] for name, out in outputs.items() if self.view_problem(config, config.view(name)) is self}
        values["fused"] = others.fused[:, 0]
        values |= {name: out[:, 0] for name, out in baselines.items()}
        resamples = evaluate.resample_counts(len(y))
        test, samples, details = {}, {}, {}
        for name in [*config.views, *values]:
            if name in values:
                test[name], samples[name] = _score_values(y, values[name], resamples)
            elif name not in test:
                level = config.view(name).level
                test[name], details[name] = score_model(taxonomy, level, y_fine, outputs[name], resamples)
        value_views = [name for name in config.views if name in values]
        metric = config.promotion.metric or self.headline
        best = best_in(value_views, test, metric)
        metrics = {"modality": config.data.modality, "task": self.name, "metric": metric, "test": test,
                   "best_single": best, "fine_views": value_views}
        by_segment = _rmse_by_segment(config, reads, y, values)
        if by_segment:
            metrics["segments"] = by_segment
        if best:
            low, high = evaluate.percentile_interval(samples["fused"][metric] - samples[best][metric])
            paired = evaluate.paired_squared_error_test(values["fused"] - y, values[best] - y)
            metrics |= {
                "fused_minus_best_single": test["fused"][metric] - test[best][metric],
                "fused_minus_best_single_ci": {"low": low, "high": high},
                "paired_test": {"versus": best, **paired},
                "significance": {
                    "test": "paired_t", "versus": best, "p_value": paired["p_value"], "b": paired["b"], "c": paired["c"],
                    "identical": bool(np.array_equal(values["fused"], values[best])),
                },
            }
        for name in baselines:  # the boosted trees to beat, and the mean as the floor
            metrics[MEAN if name == MEAN else "baseline"] = {"model": name}
        metrics["bootstrap"] = bootstrap_record(resamples)
        _write_value_evaluation(paths, taxonomy, y, y_fine, test, values, details)
        return metrics

    def floor_outputs(self, train_targets: np.ndarray, sizes: dict[str, int], num_classes: int) -> dict[str, np.ndarray]:
        """The training split's mean value, for every example (R² about 0)."""
        mean = float(train_targets.mean())
        return {split: np.full((size, 1), mean) for split, size in sizes.items()}

    def floor_checks(self, metrics: dict, metric: str) -> list[Check]:
        if MEAN not in metrics:
            return []
        return [above_floor(metrics["test"]["fused"], metrics["test"][metrics[MEAN]["model"]], metric, "the mean value")]

    def significance_check(self, metrics: dict, best: str, max_p_value: float) -> Check:
        return _squared_error_gain(metrics.get("paired_test") or {}, best, max_p_value)

    def comparison_rows(self, metrics: dict) -> list[dict[str, str]]:
        return report.value_rows(metrics)

    def validation_score(self, outputs: np.ndarray, y: np.ndarray) -> dict[str, float]:
        return {"val_rmse": float(np.sqrt(np.mean((outputs[:, 0] - y) ** 2)))}

    def importance_targets(self, config: Config, taxonomy: Taxonomy, truth: np.ndarray) -> dict[str, np.ndarray]:
        """The views of the value, on the test rows' values (a binned view's is not measured)."""
        return {view.name: truth for view in config.views.values() if self.view_problem(config, view) is self}

    def fused_answers(self, fused) -> Callable:
        return fused.predict_values


VALUES = Values()


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

    write_class_details(paths, test, details, predicted_against_actual)
    truth = {"actual": y} | {
        f"actual_{level}": np.asarray(taxonomy.names[level])[taxonomy.map_labels(y_fine, level)] for level in taxonomy.levels[1:]
    }
    predicted_bins = {name: np.asarray(d["classes"])[d["predicted"]] for name, d in details.items()}
    write_csv(paths.test_predictions, pd.DataFrame({**truth, **values, **predicted_bins}))
    write_csv(paths.comparison, pd.DataFrame([
        {"model": name, **{column: scores.get(column) for column in (*VALUE_COLUMNS, *interval_columns(CLASS_SCORES))}}
        for name, scores in test.items()
    ]).dropna(axis=1, how="all"))


def _rmse_by_segment(config: Config, reads: ProjectReads, y: np.ndarray, values: dict[str, np.ndarray]) -> dict:
    """For each segmented view of the value, per test segment: its expert's RMSE next to the
    global model's."""
    def errors(view: ViewConfig) -> dict[str, np.ndarray] | None:
        if view.name not in values:
            return None
        out = {"rmse": values[view.name] - y}
        if view.global_model in values:
            out["global_rmse"] = values[view.global_model] - y
        return out

    return scores_by_segment(config, reads, errors, lambda error: float(np.sqrt(np.mean(error ** 2))))


def _squared_error_gain(test: dict, best: str, max_p_value: float) -> Check:
    """A regression's significance: the paired t-test of the fused model's and `best`'s squared
    errors on the test rows (granular/core/evaluate.py: paired_squared_error_test)."""
    if not {"versus", "p_value", "mse_gain"} <= test.keys() or test["versus"] != best:
        return Check(False, (
            f"significance is mcnemar, but the evaluation has no paired test of squared errors (paired_test) "
            f"of the fused model against the best single view {best}"
        ))
    p_value = p_value_text(test["p_value"])
    mse_gain = test["mse_gain"]
    gain = f"(mean squared error {'+' if mse_gain >= 0 else ''}{report.number(mse_gain, report.decimals_for([mse_gain]))} lower than {best}'s)"
    if test["p_value"] >= max_p_value:
        return Check(False, f"the gain in R² over {best} is not significant: the paired test's p = {p_value} is not below {max_p_value:g} {gain}")
    if mse_gain <= 0:
        return Check(False, f"the fused model is significantly worse than {best}, not better: p = {p_value} < {max_p_value:g} {gain}")
    return Check(True, f"the gain in R² over {best} is significant: the paired test's p = {p_value} < {max_p_value:g} {gain}")
