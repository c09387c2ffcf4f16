"""The champion gate: each condition promotes when met and blocks, with its numbers, when not."""
from __future__ import annotations

import pytest

from granular.config import PromotionConfig
from granular.core import promotion
from granular.problems import CLASSES


def decide(metrics: dict, champion_metrics: dict | None, config: PromotionConfig, **named):
    """The gate of a classifier's evaluation, as the registry asks it."""
    return promotion.decide(metrics, champion_metrics, config, CLASSES, **named)


# The gate these tests state in full, so that tuning a default of params.yaml's `promotion:` changes
# no expected decision: a gain over the best single view of more than 0 that McNemar's test finds
# significant at p < 0.05, more than 0 over the champion, and no other condition. A test changes
# only the settings it is about.
GATE = {
    "metric": None, "min_gain_over_best_single": 0.0, "significance": "mcnemar", "max_p_value": 0.05,
    "min_gain_over_champion": 0.0, "min_metrics": {}, "max_mistake_severity": None,
    "min_hierarchical_f1": None, "min_level_accuracy": {}, "max_cascade_accuracy_drop": 0.001,
}


def gate(**changes) -> PromotionConfig:
    """GATE with `changes`."""
    return PromotionConfig(**(GATE | changes))

# McNemar's (b, c, p) of a real gain, 0.9318 against 0.9309 on 10 000 test images: nine more
# right, none fewer, exact p = 2 / 2**9. The tests of the other conditions start from it.
SIGNIFICANT = (9, 0, 0.0039)


def _metrics(
    fused: float,
    best: float = 0.9309,
    *,
    mcnemar: tuple[int, int, float] | None = SIGNIFICANT,
    versus: str = "fine-28",
    interval: tuple[float, float] | None = None,
    **fused_extra: float,
) -> dict:
    """The evaluation's shape; mcnemar (b, c, p) and the paired interval (low, high) of the gain
    over `versus`, each left out when None."""
    metrics = {
        "best_single": "fine-28",
        "bootstrap": {"confidence": 0.95, "resamples": 1000, "seed": 0},
        "test": {
            "fine-28": {"accuracy": best, "level": "fine"},
            "coarse-28": {"accuracy": 0.99, "level": "coarse"},  # not a fine view: never the one to beat
            "fused": {"accuracy": fused, "level": "fine", **fused_extra},
        },
    }
    if mcnemar is not None:
        b, c, p_value = mcnemar
        metrics["mcnemar"] = {"versus": versus, "b": b, "c": c, "p_value": p_value, "method": "exact"}
    if interval is not None:
        metrics["fused_minus_best_single_ci"] = dict(zip(("low", "high"), interval))
    return metrics


def _champion(accuracy: float) -> dict:
    return {"test": {"fused": {"accuracy": accuracy}}}


def test_a_fused_model_better_than_every_view_and_no_champion_is_promoted_with_its_reasons():
    decision = decide(_metrics(0.9318), None, gate())
    assert decision.promote
    assert decision.reasons == [
        "fused accuracy 0.9318 beats the best single view fine-28 (0.9309) by more than the margin 0 (gain +0.0009)",
        "the gain over fine-28 is significant: McNemar p = 0.0039 < 0.05 "
        "(9 test examples only the fused model gets right, 0 only fine-28)",
        "there is no champion yet, so there is none to beat",
    ]


def test_a_gain_below_the_margin_over_the_best_single_view_blocks_with_the_numbers():
    decision = decide(_metrics(0.9318), None, gate(min_gain_over_best_single=0.002))
    assert not decision.promote
    assert decision.reasons == [
        "fused accuracy 0.9318 does not beat the best single view fine-28 (0.9309) by more than the margin 0.002 "
        "(gain +0.0009)"
    ]


def test_a_tie_with_the_best_single_view_is_not_a_gain():
    # 0.9318 - 0.9309 is 0.0009000000000000119 in floating point: a tie must not turn on that noise.
    # significance="none": the margin alone must refuse it.
    config = gate(min_gain_over_best_single=0.0009, significance="none")
    assert not decide(_metrics(0.9318), None, config).promote
    assert not decide(_metrics(0.9309), None, gate(significance="none")).promote


def test_a_negative_margin_lets_a_fused_model_slightly_below_the_best_view_through():
    # about the margin alone; with mcnemar, a worse model is refused (the next test)
    config = gate(min_gain_over_best_single=-0.001, significance="none")
    assert decide(_metrics(0.9300), None, config).promote


def test_mcnemar_refuses_a_significantly_worse_model_a_negative_margin_let_through():
    metrics = _metrics(0.9257, best=0.9309, mcnemar=(12, 40, 0.0002))
    decision = decide(metrics, None, gate(min_gain_over_best_single=-0.01))
    assert not decision.promote
    assert decision.reasons == [
        "the fused model is significantly worse than fine-28, not better: McNemar p = 0.0002 < 0.05 "
        "(12 test examples only the fused model gets right, 40 only fine-28)"
    ]


# --- significance of the gain over the best single view -------------------------------------------

def test_a_tie_that_mcnemar_cannot_tell_from_noise_keeps_the_champion():
    # a past default run (in git history): fused 0.9321 against fine-28 0.9319
    decision = decide(_metrics(0.9321, best=0.9319, mcnemar=(26, 24, 0.887537)), None, gate())
    assert not decision.promote
    assert decision.reasons == [
        "the gain over fine-28 is not significant: McNemar p = 0.8875 is not below 0.05 "
        "(26 test examples only the fused model gets right, 24 only fine-28)"
    ]


def test_a_significant_gain_is_promoted_with_its_figures():
    decision = decide(_metrics(0.9339, mcnemar=(54, 24, 0.001)), None, gate())
    assert decision.promote
    assert decision.reasons[1] == (
        "the gain over fine-28 is significant: McNemar p = 0.0010 < 0.05 "
        "(54 test examples only the fused model gets right, 24 only fine-28)"
    )


def test_max_p_value_is_the_threshold_and_a_tiny_p_keeps_its_digits():
    metrics = _metrics(0.9339, mcnemar=(70, 30, 9.6e-5))
    assert "McNemar p = 9.6e-05 < 0.05" in decide(metrics, None, gate()).reasons[1]
    strict = decide(_metrics(0.9339, mcnemar=(54, 24, 0.001)), None, gate(max_p_value=0.001))
    assert not strict.promote
    assert "McNemar p = 0.0010 is not below 0.001" in strict.reasons[0]


@pytest.mark.parametrize(("interval", "promote", "sentence"), [
    ((0.0008, 0.0052), True,
     "the gain over fine-28 is significant: its 95% paired bootstrap interval [+0.0008, +0.0052] "
     "lies above the margin 0"),
    ((-0.0012, 0.0015), False,
     "the gain over fine-28 is not significant: its 95% paired bootstrap interval [-0.0012, +0.0015] "
     "does not lie above the margin 0"),
])
def test_the_interval_must_lie_above_the_margin(interval, promote, sentence):
    metrics = _metrics(0.9339, mcnemar=None, interval=interval)  # McNemar is not asked for
    decision = decide(metrics, None, gate(significance="interval"))
    assert decision.promote is promote
    assert sentence in decision.reasons


def test_an_interval_reaching_exactly_the_margin_is_not_above_it():
    metrics = _metrics(0.9339, interval=(0.0020000000000000018, 0.0052))  # 0.002 up to float noise
    assert not decide(metrics, None, gate(significance="interval", min_gain_over_best_single=0.002)).promote


def test_significance_none_decides_as_the_gate_did_before_it():
    tie = _metrics(0.9321, best=0.9319, mcnemar=(26, 24, 0.887537))
    decision = decide(tie, None, gate(significance="none"))
    assert decision.promote
    assert decision.reasons == [
        "fused accuracy 0.9321 beats the best single view fine-28 (0.9319) by more than the margin 0 (gain +0.0002)",
        "there is no champion yet, so there is none to beat",
    ]


@pytest.mark.parametrize(("significance", "metrics", "sentence"), [
    ("mcnemar", _metrics(0.9339, mcnemar=None),
     "significance is mcnemar, but the evaluation has no McNemar test (mcnemar.p_value, b, c) "
     "of the fused model against fine-28"),
    ("interval", _metrics(0.9339),
     "significance is interval, but the evaluation has no paired interval of the gain over fine-28 "
     "(fused_minus_best_single_ci and bootstrap.confidence)"),
])
def test_missing_significance_figures_refuse_and_say_which(significance, metrics, sentence):
    decision = decide(metrics, None, gate(significance=significance))
    assert not decision.promote
    assert decision.reasons == [sentence]


def test_a_mcnemar_test_against_another_view_does_not_count():
    decision = decide(_metrics(0.9339, mcnemar=(54, 24, 0.001), versus="fine-14"), None, gate())
    assert not decision.promote
    assert decision.reasons == [
        "the evaluation's McNemar test is against fine-14, not the best single view fine-28, "
        "so it cannot tell the gain over fine-28 from noise"
    ]


def test_the_champion_must_be_beaten_by_more_than_its_margin():
    config = gate(min_gain_over_champion=0.001)
    kept = decide(_metrics(0.9318), _champion(0.9312), config, champion_name="the champion (version 2)")
    assert not kept.promote
    assert kept.reasons == [
        "fused accuracy 0.9318 does not beat the champion (version 2) (0.9312) by more than the margin 0.001 "
        "(gain +0.0006)"
    ]
    replaced = decide(_metrics(0.9330), _champion(0.9312), config)
    assert replaced.promote
    assert "fused accuracy 0.9330 beats the champion (0.9312)" in replaced.reasons[2]


def test_a_retrain_that_only_ties_the_champion_keeps_it():
    assert not decide(_metrics(0.9318), _champion(0.9318), gate()).promote


def test_a_champion_without_a_recorded_accuracy_blocks_rather_than_passes():
    decision = decide(_metrics(0.95), {"test": {}}, gate())
    assert not decision.promote
    assert decision.reasons == ["the champion has no recorded fused test accuracy to compare with"]


def test_every_failed_condition_is_reported():
    config = gate(min_gain_over_best_single=0.01, min_gain_over_champion=0.01)
    decision = decide(_metrics(0.9318), _champion(0.9400), config)
    assert not decision.promote
    assert len(decision.reasons) == 2
    assert "best single view" in decision.reasons[0] and "champion (0.9400)" in decision.reasons[1]


@pytest.mark.parametrize(("severity", "promote", "sentence"), [
    (1.2, True, "fused mistake severity 1.2000 is within the maximum 1.5"),
    (1.7, False, "fused mistake severity 1.7000 is above the maximum 1.5"),
])
def test_mistake_severity_is_capped(severity, promote, sentence):
    decision = decide(_metrics(0.95, mistake_severity=severity), None, gate(max_mistake_severity=1.5))
    assert decision.promote is promote
    assert sentence in decision.reasons


def test_no_mistakes_at_all_meets_any_severity_cap():
    decision = decide(_metrics(1.0, errors=0), None, gate(max_mistake_severity=1.0))
    assert decision.promote


@pytest.mark.parametrize(("config", "extra", "promote", "sentence"), [
    (gate(min_hierarchical_f1=0.95), {"hierarchical_f1": 0.9612}, True,
     "fused hierarchical F1 0.9612 reaches the minimum 0.95"),
    (gate(min_hierarchical_f1=0.97), {"hierarchical_f1": 0.9612}, False,
     "fused hierarchical F1 0.9612 is below the minimum 0.97"),
    (gate(min_level_accuracy={"coarse": 0.98}), {"coarse_accuracy": 0.9845}, True,
     "fused coarse accuracy 0.9845 reaches the minimum 0.98"),
    (gate(min_level_accuracy={"coarse": 0.99}), {"coarse_accuracy": 0.9845}, False,
     "fused coarse accuracy 0.9845 is below the minimum 0.99"),
])
def test_hierarchical_minimums(config, extra, promote, sentence):
    decision = decide(_metrics(0.95, **extra), None, config)
    assert decision.promote is promote
    assert sentence in decision.reasons


def test_a_condition_on_a_metric_the_evaluation_lacks_blocks_and_says_which():
    # metrics.json written before hierarchical scores were evaluated
    decision = decide(_metrics(0.95), None, gate(min_hierarchical_f1=0.9, max_mistake_severity=1.0))
    assert not decision.promote
    assert decision.reasons == [
        "max_mistake_severity is 1, but the evaluation has no fused mistake_severity",
        "a minimum hierarchical F1 of 0.9 is required, but the evaluation has no fused hierarchical_f1",
    ]


def test_unset_hierarchical_conditions_are_not_checked():
    decision = decide(_metrics(0.95), None, gate())
    assert decision.promote and len(decision.reasons) == 3  # best single view, its significance, champion


def test_without_a_fine_single_view_only_the_champion_counts():
    metrics = {"best_single": None, "test": {"coarse-28": {"accuracy": 0.99}, "fused": {"accuracy": 0.9}}}
    decision = decide(metrics, None, gate())
    assert decision.promote
    assert decision.reasons[1] == (
        "no single view predicts fine labels, so there is no gain over a best single view to test"
    )
    assert not decide(metrics, _champion(0.91), gate()).promote


def _with_majority(fused_accuracy: float, fused_balanced: float, majority_accuracy: float, classes: int = 2) -> dict:
    metrics = _metrics(fused_accuracy, best=fused_accuracy - 0.01, balanced_accuracy=fused_balanced)
    metrics["test"]["majority"] = {"accuracy": majority_accuracy, "balanced_accuracy": 1 / classes, "level": "fine"}
    metrics["majority"] = {"model": "majority"}
    return metrics


def test_a_model_no_better_than_the_majority_class_is_never_promoted_however_it_beats_the_views():
    # A 5%-positive table: 0.9472 accuracy, not one positive found (balanced accuracy 0.5).
    decision = decide(_with_majority(0.9472, 0.5, 0.9477), None, gate())
    assert not decision.promote
    assert decision.reasons == [
        "the fused model does no better than the majority class: accuracy 0.9472 against 0.9477; "
        "balanced accuracy 0.5000 against 0.5000"
    ]
    decision = decide(_with_majority(0.9490, 0.5, 0.9477), None, gate())  # accuracy alone is not enough
    assert decision.reasons == [
        "the fused model does no better than the majority class: balanced accuracy 0.5000 against 0.5000"
    ]


def test_a_model_better_than_the_majority_class_passes_that_check_with_its_figures():
    decision = decide(_with_majority(0.9620, 0.81, 0.9477), None, gate())
    assert decision.promote
    assert ("the fused model does better than the majority class (accuracy 0.9620 against 0.9477, "
            "balanced accuracy 0.8100 against 0.5000)") in decision.reasons


def test_the_gate_can_be_set_on_another_metric_against_the_best_view_in_it():
    metrics = _metrics(0.95, balanced_accuracy=0.71)
    metrics["fine_views"] = ["fine-28", "fine-14"]
    metrics["test"]["fine-28"]["balanced_accuracy"] = 0.60
    metrics["test"]["fine-14"] = {"accuracy": 0.90, "balanced_accuracy": 0.74, "level": "fine"}  # best in it
    config = gate(metric="balanced_accuracy", significance="none")
    decision = decide(metrics, {"test": {"fused": {"balanced_accuracy": 0.65}}}, config)
    assert not decision.promote  # higher accuracy than every view, but not balanced accuracy
    assert decision.reasons == [
        "fused balanced accuracy 0.7100 does not beat the best single view fine-14 (0.7400) "
        "by more than the margin 0 (gain -0.0300)"
    ]
    metrics["test"]["fused"]["balanced_accuracy"] = 0.80
    assert decide(metrics, {"test": {"fused": {"balanced_accuracy": 0.65}}}, config).promote


def test_floors_on_any_metric_block_with_their_numbers():
    decision = decide(_metrics(0.9318, pr_auc=0.41, roc_auc=0.93), None, gate(min_metrics={"pr_auc": 0.5, "roc_auc": 0.9}))
    assert not decision.promote
    assert decision.reasons == ["fused pr auc 0.4100 is below the minimum 0.5"]


def _bootstrapped(metric: str, difference: float, p_value: float) -> dict:
    """An evaluation in `metric`: fine-28 the best view in it, the paired bootstrap's test of the gain."""
    metrics = _metrics(0.93, mcnemar=None, roc_auc=0.95)
    metrics["metric"] = metric
    metrics["test"]["fine-28"][metric] = 0.95 - difference
    metrics["significance"] = {"test": "paired_bootstrap", "versus": "fine-28", "difference": difference,
                               "p_value": p_value, "resamples": 1000}
    return metrics


def test_significance_of_another_metric_is_its_paired_bootstrap_test():
    decision = decide(_bootstrapped("roc_auc", 0.02, 0.004), None, gate(metric="roc_auc"))
    assert decision.promote
    assert ("the gain over fine-28 is significant: the paired bootstrap's p = 0.0040 < 0.05 "
            "(fused roc auc +0.0200 against fine-28, 1000 paired resamples)") in decision.reasons
    decision = decide(_bootstrapped("roc_auc", 0.02, 0.08), None, gate(metric="roc_auc"))
    assert decision.reasons == [
        "the gain over fine-28 is not significant: the paired bootstrap's p = 0.0800 is not below 0.05 "
        "(fused roc auc +0.0200 against fine-28, 1000 paired resamples)"
    ]


def test_an_evaluation_in_another_metric_cannot_say_a_gain_is_significant():
    decision = decide(_bootstrapped("roc_auc", 0.02, 0.004), None, gate(metric="pr_auc", min_metrics={}))
    assert not decision.promote
    assert ("significance is mcnemar, but the evaluation tested the gain over fine-28 in roc auc, not in pr auc: "
            "evaluate again with promotion.metric pr_auc") in decision.reasons


# --- the served cascade ---------------------------------------------------------------------------

def _with_cascade(drop: float, b: int, c: int, p_value: float) -> dict:
    metrics = _metrics(0.9433)
    metrics["cascade"] = {"accuracy_drop": drop, "mcnemar": {"versus": "fused", "b": b, "c": c, "p_value": p_value}}
    return metrics


def test_a_cascade_that_keeps_the_fused_models_accuracy_is_promoted_with_it():
    decision = decide(_with_cascade(0.0002, 3, 5, 0.73), None, gate())
    assert decision.promote
    assert any("the cascade keeps the fused model's accuracy: its test accuracy is 0.0002 below it" in reason for reason in decision.reasons)


def test_a_cascade_that_loses_more_than_the_setting_is_not_promoted():
    decision = decide(_with_cascade(0.0015, 2, 17, 0.0023), None, gate())
    assert not decision.promote
    assert decision.reasons == [
        "the cascade's test accuracy is 0.0015 below the fused model's, more than the maximum 0.001; McNemar p = 0.0023 "
        "(2 test examples only the cascade gets right, 17 only the fused model)"
    ]
    assert decide(_with_cascade(0.0015, 2, 17, 0.0023), None, gate(max_cascade_accuracy_drop=0.002)).promote is False  # significant
    assert decide(_with_cascade(0.0015, 2, 17, 0.0023), None, gate(max_cascade_accuracy_drop=0.002, significance="none")).promote
