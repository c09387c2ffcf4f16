"""The champion gate: does a newly evaluated fused model replace the one being served?

A pure function of the new evaluation (the shape of data/evaluation/metrics.json), the current
champion's (or None) and the `promotion:` section. Every margin is strict: the fused model must
beat by MORE than the margin, so the default 0.0 asks for strictly better and a tie keeps the
current champion (no churn from a retrain that changed nothing). Every comparison is in one
metric, promotion.metric (None: the problem's headline, accuracy or a regression's R²): the best
single view is the best in it, and the floor (the majority class, a regression's mean value) is
beaten in it. By default the gain over the best single view must also be significant
(`mcnemar`: the paired test of that metric, McNemar's for accuracy, a paired bootstrap test for
another class score, a paired t-test of squared errors for R²; `interval`: the paired bootstrap
interval above the margin), so a gain the test set cannot tell from noise keeps the champion too.
The problem the model solves (granular/problems/) gives its headline metric, its floor and its
test. A condition on a metric the evaluation lacks fails: a gate that cannot check must not
promote.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from granular.config import PromotionConfig
from granular.core.cascade import CASCADE

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
class Check:
    passed: bool
    sentence: str


class Rules(Protocol):
    """What the gate asks of the problem the fused model solves (granular/problems/)."""

    headline: str  # the metric a model is compared on unless promotion.metric names another

    def floor_checks(self, metrics: dict, metric: str) -> list[Check]:
        """The fused model against the baseline every model must beat, in `metric`, where the
        evaluation has it."""

    def significance_check(self, metrics: dict, best: str, max_p_value: float) -> Check:
        """The evaluation's paired test of the fused model against `best` in its metric
        (significance: mcnemar)."""


def decide(
    metrics: dict, champion_metrics: dict | None, config: PromotionConfig, rules: Rules,
    champion_name: str = "the champion",
) -> Decision:
    """Apply every condition of `config` to the fused model's test metrics in `metrics`
    (`test.fused.accuracy`, ...), against the best single view and against `champion_metrics`
    (the same shape; None when there is no champion yet); `rules`: the problem's."""
    fused = metrics["test"][FUSED]
    metric = config.metric or rules.headline
    checks = [_gain_over_best_single(metrics, metric, rules.headline, config.min_gain_over_best_single)]
    checks += rules.floor_checks(metrics, metric)  # a model no better than the floor is never promoted
    if config.significance != "none":
        checks.append(_significant_gain(metrics, metric, config, rules))
    checks.append(_gain_over_champion(fused, champion_metrics, metric, config.min_gain_over_champion, champion_name))
    for metric, least in config.min_metrics.items():
        checks.append(_at_least(fused, metric, metric_label(metric), least))
    if config.max_mistake_severity is not None:
        checks.append(_mistake_severity(fused, config.max_mistake_severity))
    if config.min_hierarchical_f1 is not None:
        checks.append(_at_least(fused, "hierarchical_f1", "hierarchical F1", config.min_hierarchical_f1))
    for level, least in config.min_level_accuracy.items():
        checks.append(_at_least(fused, f"{level}_accuracy", f"{level} accuracy", least))
    if CASCADE in metrics:  # what is served answers through it
        checks.append(_cascade_keeps_accuracy(metrics[CASCADE], config))
    failed = [check.sentence for check in checks if not check.passed]
    if failed:
        return Decision(promote=False, reasons=failed)
    return Decision(promote=True, reasons=[check.sentence for check in checks])


def metric_label(metric: str) -> str:
    """A metric's name for people: 'balanced accuracy', 'R²'."""
    return "R²" if metric == "r2" else metric.replace("_", " ")


def beats(accuracy: float, other: float, margin: float) -> bool:
    return accuracy - other - margin > _TOLERANCE


def _best_single(metrics: dict, metric: str, headline: str) -> str | None:
    """The best single fine view in `metric`: the evaluation's best_single where it compared the
    views in `metric` (its "metric"; an evaluation without one compared them in the problem's
    `headline`: accuracy, a regression's R²)."""
    views = metrics.get("fine_views")
    if metric == metrics.get("metric", headline) or not views:
        return metrics.get("best_single")
    return max(views, key=lambda view: metrics["test"][view].get(metric, float("-inf")))


def _gain_over_best_single(metrics: dict, metric: str, headline: str, margin: float) -> Check:
    best = _best_single(metrics, metric, headline)
    if best is None:
        return Check(True, "no single view predicts fine labels, so there is no best single view to beat")
    score, other = metrics["test"][FUSED].get(metric), metrics["test"][best].get(metric)
    if score is None or other is None:
        return Check(False, f"the promotion metric is {metric}, but the evaluation has no {metric} of the fused model and {best}")
    passed = beats(score, other, margin)
    verb = "beats" if passed else "does not beat"
    return Check(passed, (
        f"fused {metric_label(metric)} {score:.4f} {verb} the best single view {best} ({other:.4f}) "
        f"by more than the margin {margin:g} (gain {score - other:+.4f})"
    ))


def _significant_gain(metrics: dict, metric: str, config: PromotionConfig, rules: Rules) -> Check:
    best = metrics.get("best_single")
    if best is None:
        return Check(True, "no single view predicts fine labels, so there is no gain over a best single view to test")
    tested = metrics.get("metric", rules.headline)
    if tested != metric:  # the paired test and interval are of the evaluation's metric
        return Check(False, (
            f"significance is {config.significance}, but the evaluation tested the gain over {best} in {metric_label(tested)}, "
            f"not in {metric_label(metric)}: evaluate again with promotion.metric {metric}"
        ))
    if config.significance == "mcnemar":
        return rules.significance_check(metrics, best, config.max_p_value)
    return _interval_gain(metrics, best, config.min_gain_over_best_single)


def above_floor(fused: dict, floor: dict, metric: str, name: str) -> Check:
    """Better in `metric` than the baseline `name` that answers alike for every example."""
    label = metric_label(metric)
    score, other = fused.get(metric), floor.get(metric)
    if score is None or other is None:
        return Check(False, f"the promotion metric is {metric}, but the evaluation has no {metric} of the fused model and {name}")
    if not beats(score, other, 0.0):
        return Check(False, f"the fused model does no better than {name}: {label} {score:.4f} against {other:.4f}")
    return Check(True, f"the fused model does better than {name} ({label} {score:.4f} against {other:.4f})")


def bootstrap_gain(test: dict, best: str, metric: str, max_p_value: float) -> Check:
    """The evaluation's paired bootstrap test of the fused model against `best` in `metric`
    (granular/core/evaluate.py: paired_bootstrap_test): significant, and a gain."""
    label = metric_label(metric)
    if not {"versus", "p_value", "difference"} <= test.keys() or test["versus"] != best:
        return Check(False, (
            f"significance is mcnemar, but the evaluation has no paired bootstrap test (significance.p_value) "
            f"of the fused model against the best single view {best} in {label}"
        ))
    p_value = p_value_text(test["p_value"])
    figures = f"(fused {label} {test['difference']:+.4f} against {best}, {test['resamples']} paired resamples)"
    if test["p_value"] >= max_p_value:
        return Check(False, (
            f"the gain over {best} is not significant: the paired bootstrap's p = {p_value} is not below {max_p_value:g} {figures}"
        ))
    if test["difference"] <= 0:
        return Check(False, (
            f"the fused model is significantly worse than {best}, not better: p = {p_value} < {max_p_value:g} {figures}"
        ))
    return Check(True, f"the gain over {best} is significant: the paired bootstrap's p = {p_value} < {max_p_value:g} {figures}")


def p_value_text(p: float) -> str:
    """Four decimals, as the accuracies; a real gain on thousands of examples has a p far smaller."""
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def _interval_gain(metrics: dict, best: str, margin: float) -> Check:
    interval = metrics.get("fused_minus_best_single_ci") or {}
    confidence = metrics.get("bootstrap", {}).get("confidence")
    if not {"low", "high"} <= interval.keys() or confidence is None:
        return Check(False, (
            f"significance is interval, but the evaluation has no paired interval of the gain over {best} "
            f"(fused_minus_best_single_ci and bootstrap.confidence)"
        ))
    low, high = interval["low"], interval["high"]
    passed = low - margin > _TOLERANCE
    verdict, relation = ("is", "lies above") if passed else ("is not", "does not lie above")
    return Check(passed, (
        f"the gain over {best} {verdict} significant: its {confidence * 100:g}% paired bootstrap interval "
        f"[{low:+.4f}, {high:+.4f}] {relation} the margin {margin:g}"
    ))


def _gain_over_champion(fused: dict, champion_metrics: dict | None, metric: str, margin: float, name: str) -> Check:
    if champion_metrics is None:
        return Check(True, "there is no champion yet, so there is none to beat")
    other = champion_metrics.get("test", {}).get(FUSED, {}).get(metric)
    label = metric_label(metric)
    if other is None:
        return Check(False, f"{name} has no recorded fused test {label} to compare with")
    score = fused[metric]
    passed = beats(score, other, margin)
    verb = "beats" if passed else "does not beat"
    return Check(passed, (
        f"fused {label} {score:.4f} {verb} {name} ({other:.4f}) "
        f"by more than the margin {margin:g} (gain {score - other:+.4f})"
    ))


def _mistake_severity(fused: dict, most: float) -> Check:
    severity = fused.get("mistake_severity")
    if severity is None:
        if fused.get("errors") == 0:  # the severity is a mean over mistakes: none were made
            return Check(True, "the fused model made no mistakes, so none are too severe")
        return Check(False, f"max_mistake_severity is {most:g}, but the evaluation has no fused mistake_severity")
    passed = severity <= most
    relation = "is within" if passed else "is above"
    return Check(passed, f"fused mistake severity {severity:.4f} {relation} the maximum {most:g}")


def _cascade_keeps_accuracy(cascade: dict, config: PromotionConfig) -> Check:
    """The served cascade gives up at most max_cascade_accuracy_drop of the fused model's test
    accuracy, and with significance mcnemar, McNemar's test does not find it worse."""
    drop, most = cascade["accuracy_drop"], config.max_cascade_accuracy_drop
    test = cascade["mcnemar"]
    p_value = p_value_text(test["p_value"])
    counts = (
        f"McNemar p = {p_value} ({test['b']} test examples only the cascade gets right, {test['c']} only the fused model)"
    )
    if drop - most > _TOLERANCE:
        return Check(False, (
            f"the cascade's test accuracy is {drop:.4f} below the fused model's, more than the maximum {most:g}; {counts}"
        ))
    if config.significance == "mcnemar" and test["p_value"] < config.max_p_value and test["c"] > test["b"]:
        return Check(False, (
            f"the cascade is significantly less accurate than the fused model: {counts} < {config.max_p_value:g}"
        ))
    return Check(True, (
        f"the cascade keeps the fused model's accuracy: its test accuracy is {drop:.4f} below it (at most {most:g}); {counts}"
    ))


def _at_least(fused: dict, key: str, label: str, least: float) -> Check:
    value = fused.get(key)
    if value is None:
        return Check(False, f"a minimum {label} of {least:g} is required, but the evaluation has no fused {key}")
    passed = value >= least
    relation = "reaches" if passed else "is below"
    return Check(passed, f"fused {label} {value:.4f} {relation} the minimum {least:g}")
