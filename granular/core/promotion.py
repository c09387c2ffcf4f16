"""The champion gate: does a newly evaluated fused model replace the one being served?

A pure function of the new evaluation (the shape of data/evaluation/metrics.json), the current
champion's (or None) and the `promotion:` section. Every margin is strict: the fused model must
beat by MORE than the margin, so the default 0.0 asks for strictly better and a tie keeps the
current champion (no churn from a retrain that changed nothing). By default the gain over the
best single view must also be significant (McNemar's test, or the paired bootstrap interval above
the margin), so a gain the test set cannot tell from noise keeps the champion too. A regression
target's gains are in R² (for `mcnemar`, a paired t-test of the two models' squared errors), and
its floor is the mean value, as a classifier's is the majority class. A condition on
a metric the evaluation lacks fails: a gate that cannot check must not promote.
"""
from __future__ import annotations

from dataclasses import dataclass

from granular.config import PromotionConfig

FUSED = "fused"
# Accuracies are ratios of counts; float noise in a difference must not decide a tie.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Decision:
    """promote: every condition passed. reasons: the sentences behind it, numbers included —
    every condition checked when promoted, the failed ones when not."""

    promote: bool
    reasons: list[str]


@dataclass(frozen=True)
class _Check:
    passed: bool
    sentence: str


def decide(
    metrics: dict, champion_metrics: dict | None, config: PromotionConfig, champion_name: str = "the champion"
) -> Decision:
    """Apply every condition of `config` to the fused model's test metrics in `metrics`
    (`test.fused.accuracy`, ...), against the best single view and against `champion_metrics`
    (the same shape; None when there is no champion yet)."""
    fused = metrics["test"][FUSED]
    metric = config.metric or ("r2" if metrics.get("task") == "regression" else "accuracy")
    checks = [_gain_over_best_single(metrics, metric, config.min_gain_over_best_single)]
    if "majority" in metrics:  # always: a model no better than the majority class is never promoted
        checks.append(_above_majority(fused, metrics["test"][metrics["majority"]["model"]]))
    if "mean" in metrics:  # ... nor a regression no better than the mean value
        checks.append(_above_mean(fused, metrics["test"][metrics["mean"]["model"]]))
    if config.significance != "none":
        checks.append(_significant_gain(metrics, config))
    checks.append(_gain_over_champion(fused, champion_metrics, metric, config.min_gain_over_champion, champion_name))
    for metric, least in config.min_metrics.items():
        checks.append(_at_least(fused, metric, _label(metric), least))
    if config.max_mistake_severity is not None:
        checks.append(_mistake_severity(fused, config.max_mistake_severity))
    if config.min_hierarchical_f1 is not None:
        checks.append(_at_least(fused, "hierarchical_f1", "hierarchical F1", config.min_hierarchical_f1))
    for level, least in config.min_level_accuracy.items():
        checks.append(_at_least(fused, f"{level}_accuracy", f"{level} accuracy", least))
    failed = [check.sentence for check in checks if not check.passed]
    if failed:
        return Decision(promote=False, reasons=failed)
    return Decision(promote=True, reasons=[check.sentence for check in checks])


def _label(metric: str) -> str:
    """A metric's name for people: 'balanced accuracy', 'R²'."""
    return "R²" if metric == "r2" else metric.replace("_", " ")


def _beats(accuracy: float, other: float, margin: float) -> bool:
    return accuracy - other - margin > _TOLERANCE


def _above_majority(fused: dict, majority: dict) -> _Check:
    """Better than answering the majority class for every example, in accuracy and in balanced
    accuracy (on a 5%-positive table the first alone lets a model that never finds one through)."""
    short = [
        f"{name} {fused[key]:.4f} against {majority[key]:.4f}"
        for key, name in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"))
        if not _beats(fused[key], majority[key], 0.0)
    ]
    if short:
        return _Check(False, f"the fused model does no better than the majority class: {'; '.join(short)}")
    return _Check(True, (
        f"the fused model does better than the majority class (accuracy {fused['accuracy']:.4f} against "
        f"{majority['accuracy']:.4f}, balanced accuracy {fused['balanced_accuracy']:.4f} against "
        f"{majority['balanced_accuracy']:.4f})"
    ))


def _above_mean(fused: dict, mean: dict) -> _Check:
    """Better in R² than predicting the training rows' mean value for every row."""
    if not _beats(fused["r2"], mean["r2"], 0.0):
        return _Check(False, f"the fused model does no better than the mean value: R² {fused['r2']:.4f} against {mean['r2']:.4f}")
    return _Check(True, f"the fused model does better than the mean value (R² {fused['r2']:.4f} against {mean['r2']:.4f})")


def _best_single(metrics: dict, metric: str) -> str | None:
    """The best single fine view in `metric`: the evaluation's best_single for accuracy (for
    R², a regression's)."""
    views = metrics.get("fine_views")
    if metric == ("r2" if metrics.get("task") == "regression" else "accuracy") or not views:
        return metrics.get("best_single")
    return max(views, key=lambda view: metrics["test"][view].get(metric, float("-inf")))


def _gain_over_best_single(metrics: dict, metric: str, margin: float) -> _Check:
    best = _best_single(metrics, metric)
    if best is None:
        return _Check(True, "no single view predicts fine labels, so there is no best single view to beat")
    score, other = metrics["test"][FUSED].get(metric), metrics["test"][best].get(metric)
    if score is None or other is None:
        return _Check(False, f"the promotion metric is {metric}, but the evaluation has no {metric} of the fused model and {best}")
    passed = _beats(score, other, margin)
    verb = "beats" if passed else "does not beat"
    return _Check(passed, (
        f"fused {_label(metric)} {score:.4f} {verb} the best single view {best} ({other:.4f}) "
        f"by more than the margin {margin:g} (gain {score - other:+.4f})"
    ))


def _significant_gain(metrics: dict, config: PromotionConfig) -> _Check:
    best = metrics.get("best_single")
    if best is None:
        return _Check(True, "no single view predicts fine labels, so there is no gain over a best single view to test")
    if config.significance == "mcnemar" and metrics.get("task") == "regression":
        return _squared_error_gain(metrics.get("paired_test") or {}, best, config.max_p_value)
    if config.significance == "mcnemar":
        return _mcnemar_gain(metrics.get("mcnemar") or {}, best, config.max_p_value)
    return _interval_gain(metrics, best, config.min_gain_over_best_single)


def _mcnemar_gain(test: dict, best: str, max_p_value: float) -> _Check:
    """McNemar's test of the fused model against `best`: b counts the test examples only the
    fused model gets right, c those only `best` gets right (granular/core/evaluate.py)."""
    if not {"versus", "p_value", "b", "c"} <= test.keys():
        return _Check(False, (
            f"significance is mcnemar, but the evaluation has no McNemar test (mcnemar.p_value, b, c) "
            f"of the fused model against {best}"
        ))
    if test["versus"] != best:
        return _Check(False, (
            f"the evaluation's McNemar test is against {test['versus']}, not the best single view {best}, "
            f"so it cannot tell the gain over {best} from noise"
        ))
    p_value = _p_value(test["p_value"])
    counts = f"({test['b']} test examples only the fused model gets right, {test['c']} only {best})"
    if test["p_value"] >= max_p_value:
        return _Check(False, (
            f"the gain over {best} is not significant: McNemar p = {p_value} is not below {max_p_value:g} {counts}"
        ))
    if test["b"] <= test["c"]:  # a negative margin let a worse model past the gain check
        return _Check(False, (
            f"the fused model is significantly worse than {best}, not better: "
            f"McNemar p = {p_value} < {max_p_value:g} {counts}"
        ))
    return _Check(True, f"the gain over {best} is significant: McNemar p = {p_value} < {max_p_value:g} {counts}")


def _squared_error_gain(test: dict, best: str, max_p_value: float) -> _Check:
    """A regression's significance: the paired t-test of the fused model's and `best`'s squared
    errors on the test rows (granular/core/evaluate.py: paired_squared_error_test)."""
    if not {"versus", "p_value", "mse_gain"} <= test.keys() or test["versus"] != best:
        return _Check(False, (
            f"significance is mcnemar, but the evaluation has no paired test of squared errors (paired_test) "
            f"of the fused model against the best single view {best}"
        ))
    p_value = _p_value(test["p_value"])
    gain = f"(mean squared error {test['mse_gain']:+.4g} lower than {best}'s)"
    if test["p_value"] >= max_p_value:
        return _Check(False, f"the gain over {best} is not significant: the paired test's p = {p_value} is not below {max_p_value:g} {gain}")
    if test["mse_gain"] <= 0:
        return _Check(False, f"the fused model is significantly worse than {best}, not better: p = {p_value} < {max_p_value:g} {gain}")
    return _Check(True, f"the gain over {best} is significant: the paired test's p = {p_value} < {max_p_value:g} {gain}")


def _p_value(p: float) -> str:
    """Four decimals, as the accuracies; a real gain on thousands of examples has a p far smaller."""
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def _interval_gain(metrics: dict, best: str, margin: float) -> _Check:
    interval = metrics.get("fused_minus_best_single_ci") or {}
    confidence = metrics.get("bootstrap", {}).get("confidence")
    if not {"low", "high"} <= interval.keys() or confidence is None:
        return _Check(False, (
            f"significance is interval, but the evaluation has no paired interval of the gain over {best} "
            f"(fused_minus_best_single_ci and bootstrap.confidence)"
        ))
    low, high = interval["low"], interval["high"]
    passed = low - margin > _TOLERANCE
    verdict, relation = ("is", "lies above") if passed else ("is not", "does not lie above")
    return _Check(passed, (
        f"the gain over {best} {verdict} significant: its {confidence * 100:g}% paired bootstrap interval "
        f"[{low:+.4f}, {high:+.4f}] {relation} the margin {margin:g}"
    ))


def _gain_over_champion(fused: dict, champion_metrics: dict | None, metric: str, margin: float, name: str) -> _Check:
    if champion_metrics is None:
        return _Check(True, "there is no champion yet, so there is none to beat")
    other = champion_metrics.get("test", {}).get(FUSED, {}).get(metric)
    label = _label(metric)
    if other is None:
        return _Check(False, f"{name} has no recorded fused test {label} to compare with")
    score = fused[metric]
    passed = _beats(score, other, margin)
    verb = "beats" if passed else "does not beat"
    return _Check(passed, (
        f"fused {label} {score:.4f} {verb} {name} ({other:.4f}) "
        f"by more than the margin {margin:g} (gain {score - other:+.4f})"
    ))


def _mistake_severity(fused: dict, most: float) -> _Check:
    severity = fused.get("mistake_severity")
    if severity is None:
        if fused.get("errors") == 0:  # the severity is a mean over mistakes: none were made
            return _Check(True, "the fused model made no mistakes, so none are too severe")
        return _Check(False, f"max_mistake_severity is {most:g}, but the evaluation has no fused mistake_severity")
    passed = severity <= most
    relation = "is within" if passed else "is above"
    return _Check(passed, f"fused mistake severity {severity:.4f} {relation} the maximum {most:g}")


def _at_least(fused: dict, key: str, label: str, least: float) -> _Check:
    value = fused.get(key)
    if value is None:
        return _Check(False, f"a minimum {label} of {least:g} is required, but the evaluation has no fused {key}")
    passed = value >= least
    relation = "reaches" if passed else "is below"
    return _Check(passed, f"fused {label} {value:.4f} {relation} the minimum {least:g}")
