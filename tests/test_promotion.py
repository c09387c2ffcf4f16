"""The champion gate: each condition promotes when met and blocks, with its numbers, when not."""
from __future__ import annotations

import pytest

from granular.config import PromotionConfig
from granular.core.promotion import decide


def _metrics(fused: float, best: float = 0.9309, **fused_extra: float) -> dict:
    return {
        "best_single": "fine-28",
        "test": {
            "fine-28": {"accuracy": best, "level": "fine"},
            "coarse-28": {"accuracy": 0.99, "level": "coarse"},  # not a fine view: never the one to beat
            "fused": {"accuracy": fused, "level": "fine", **fused_extra},
        },
    }


def _champion(accuracy: float) -> dict:
    return {"test": {"fused": {"accuracy": accuracy}}}


def test_a_fused_model_better_than_every_view_and_no_champion_is_promoted_with_its_reasons():
    decision = decide(_metrics(0.9318), None, PromotionConfig())
    assert decision.promote
    assert decision.reasons == [
        "fused accuracy 0.9318 beats the best single view fine-28 (0.9309) by more than the margin 0 (gain +0.0009)",
        "there is no champion yet, so there is none to beat",
    ]


def test_a_gain_below_the_margin_over_the_best_single_view_blocks_with_the_numbers():
    decision = decide(_metrics(0.9318), None, PromotionConfig(min_gain_over_best_single=0.002))
    assert not decision.promote
    assert decision.reasons == [
        "fused accuracy 0.9318 does not beat the best single view fine-28 (0.9309) by more than the margin 0.002 "
        "(gain +0.0009)"
    ]


def test_a_tie_with_the_best_single_view_is_not_a_gain():
    # 0.9318 - 0.9309 is 0.0009000000000000119 in floating point: a tie must not turn on that noise
    assert not decide(_metrics(0.9318), None, PromotionConfig(min_gain_over_best_single=0.0009)).promote
    assert not decide(_metrics(0.9309), None, PromotionConfig()).promote


def test_a_negative_margin_lets_a_fused_model_slightly_below_the_best_view_through():
    assert decide(_metrics(0.9300), None, PromotionConfig(min_gain_over_best_single=-0.001)).promote


def test_the_champion_must_be_beaten_by_more_than_its_margin():
    config = PromotionConfig(min_gain_over_champion=0.001)
    kept = decide(_metrics(0.9318), _champion(0.9312), config, champion_name="the champion (version 2)")
    assert not kept.promote
    assert kept.reasons == [
        "fused accuracy 0.9318 does not beat the champion (version 2) (0.9312) by more than the margin 0.001 "
        "(gain +0.0006)"
    ]
    replaced = decide(_metrics(0.9330), _champion(0.9312), config)
    assert replaced.promote
    assert "fused accuracy 0.9330 beats the champion (0.9312)" in replaced.reasons[1]


def test_a_retrain_that_only_ties_the_champion_keeps_it():
    assert not decide(_metrics(0.9318), _champion(0.9318), PromotionConfig()).promote


def test_a_champion_without_a_recorded_accuracy_blocks_rather_than_passes():
    decision = decide(_metrics(0.95), {"test": {}}, PromotionConfig())
    assert not decision.promote
    assert decision.reasons == ["the champion has no recorded fused test accuracy to compare with"]


def test_every_failed_condition_is_reported():
    config = PromotionConfig(min_gain_over_best_single=0.01, min_gain_over_champion=0.01)
    decision = decide(_metrics(0.9318), _champion(0.9400), config)
    assert not decision.promote
    assert len(decision.reasons) == 2
    assert "best single view" in decision.reasons[0] and "champion (0.9400)" in decision.reasons[1]


@pytest.mark.parametrize(("severity", "promote", "sentence"), [
    (1.2, True, "fused mistake severity 1.2000 is within the maximum 1.5"),
    (1.7, False, "fused mistake severity 1.7000 is above the maximum 1.5"),
])
def test_mistake_severity_is_capped(severity, promote, sentence):
    decision = decide(_metrics(0.95, mistake_severity=severity), None, PromotionConfig(max_mistake_severity=1.5))
    assert decision.promote is promote
    assert sentence in decision.reasons


def test_no_mistakes_at_all_meets_any_severity_cap():
    decision = decide(_metrics(1.0, errors=0), None, PromotionConfig(max_mistake_severity=1.0))
    assert decision.promote


@pytest.mark.parametrize(("config", "extra", "promote", "sentence"), [
    (PromotionConfig(min_hierarchical_f1=0.95), {"hierarchical_f1": 0.9612}, True,
     "fused hierarchical F1 0.9612 reaches the minimum 0.95"),
    (PromotionConfig(min_hierarchical_f1=0.97), {"hierarchical_f1": 0.9612}, False,
     "fused hierarchical F1 0.9612 is below the minimum 0.97"),
    (PromotionConfig(min_level_accuracy={"coarse": 0.98}), {"coarse_accuracy": 0.9845}, True,
     "fused coarse accuracy 0.9845 reaches the minimum 0.98"),
    (PromotionConfig(min_level_accuracy={"coarse": 0.99}), {"coarse_accuracy": 0.9845}, False,
     "fused coarse accuracy 0.9845 is below the minimum 0.99"),
])
def test_hierarchical_minimums(config, extra, promote, sentence):
    decision = decide(_metrics(0.95, **extra), None, config)
    assert decision.promote is promote
    assert sentence in decision.reasons


def test_a_condition_on_a_metric_the_evaluation_lacks_blocks_and_says_which():
    # metrics.json written before hierarchical scores were evaluated
    decision = decide(_metrics(0.95), None, PromotionConfig(min_hierarchical_f1=0.9, max_mistake_severity=1.0))
    assert not decision.promote
    assert decision.reasons == [
        "max_mistake_severity is 1, but the evaluation has no fused mistake_severity",
        "a minimum hierarchical F1 of 0.9 is required, but the evaluation has no fused hierarchical_f1",
    ]


def test_unset_hierarchical_conditions_are_not_checked():
    decision = decide(_metrics(0.95), None, PromotionConfig())
    assert decision.promote and len(decision.reasons) == 2


def test_without_a_fine_single_view_only_the_champion_counts():
    metrics = {"best_single": None, "test": {"coarse-28": {"accuracy": 0.99}, "fused": {"accuracy": 0.9}}}
    assert decide(metrics, None, PromotionConfig()).promote
    assert not decide(metrics, _champion(0.91), PromotionConfig()).promote
