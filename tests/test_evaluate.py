"""Evaluation metrics on small cases computed by hand, and the evaluate step on a tiny project."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from flows.cli import format_table
from granular.config import Config
from granular.core import evaluate
from granular.core.evaluate import (
    calibration,
    classification_metrics,
    confusion_matrix,
    hierarchical_metrics,
    macro_f1,
    mcnemar,
    measure_latency,
    measure_side_by_side,
    per_class_metrics,
    percentile_interval,
    resample_counts,
    resampled_macro_f1,
    resampled_means,
)
from granular.core.plots import save_reliability_png
from granular.core.taxonomy import parse_taxonomy
from granular.pipeline import evaluate as evaluate_module
from granular.pipeline.clean import clean_step
from granular.pipeline.distill import distill_step
from granular.pipeline.evaluate import evaluate_step
from granular.pipeline.fuse import fuse_step
from granular.pipeline.import_raw import import_raw_step
from granular.pipeline.split import split_step
from granular.pipeline.train import train_step
from granular.pipeline.view import view_step
from granular.problems.scoring import COMPARISON_COLUMNS
from granular.store.paths import ProjectPaths

Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 2, 2, 2, 0, 2])
# rows = true class, columns = predicted class
EXPECTED_MATRIX = [
    [2, 1, 0],  # true 0: predicted 0, 0, 1
    [0, 1, 1],  # true 1: predicted 1, 2
    [1, 0, 3],  # true 2: predicted 2, 2, 0, 2
]
# F1 = 2 TP / (predicted + actual): class 0: 4/6, class 1: 2/4, class 2: 6/8
EXPECTED_MACRO_F1 = (4 / 6 + 2 / 4 + 6 / 8) / 3  # = 23/36


def test_confusion_matrix_counts_true_by_predicted():
    np.testing.assert_array_equal(confusion_matrix(Y_TRUE, Y_PRED, 3), EXPECTED_MATRIX)


def test_macro_f1_on_hand_computed_case():
    assert macro_f1(np.array(EXPECTED_MATRIX)) == pytest.approx(23 / 36)


def test_macro_f1_counts_an_absent_never_predicted_class_as_zero():
    matrix = confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert matrix[3].sum() == 0 and matrix[:, 3].sum() == 0
    assert macro_f1(matrix) == pytest.approx(EXPECTED_MACRO_F1 * 3 / 4)


def test_macro_f1_of_a_perfect_prediction_is_one():
    assert macro_f1(confusion_matrix(Y_TRUE, Y_TRUE, 3)) == 1.0


def test_classification_metrics_from_probabilities():
    proba = np.full((len(Y_PRED), 3), 0.1)
    proba[np.arange(len(Y_PRED)), Y_PRED] = 0.8
    scores = classification_metrics(Y_TRUE, proba)
    assert scores["accuracy"] == pytest.approx(6 / 9)
    assert scores["macro_f1"] == pytest.approx(EXPECTED_MACRO_F1)
    assert scores["n"] == 9
    np.testing.assert_array_equal(scores["confusion"], EXPECTED_MATRIX)


def test_classification_metrics_on_empty_input_raises():
    with pytest.raises(ValueError, match="cannot evaluate on an empty test split"):
        classification_metrics(np.array([], dtype=np.int64), np.zeros((0, 3)))


# --- per-class scores -------------------------------------------------------------------------

def test_per_class_scores_from_a_confusion_matrix():
    # true 0: 3 right, 1 called 1; true 1: 2 called 0, 4 right
    scores = per_class_metrics(np.array([[3, 1], [2, 4]]))
    np.testing.assert_allclose(scores["precision"], [3 / 5, 4 / 5])
    np.testing.assert_allclose(scores["recall"], [3 / 4, 4 / 6])
    np.testing.assert_allclose(scores["f1"], [6 / 9, 8 / 11])  # 2PR / (P + R)
    np.testing.assert_array_equal(scores["support"], [4, 6])


def test_a_class_never_predicted_has_zero_precision_not_nan():
    scores = per_class_metrics(np.array([[1, 0], [1, 0]]))
    np.testing.assert_array_equal(scores["precision"], [0.5, 0.0])
    np.testing.assert_array_equal(scores["recall"], [1.0, 0.0])
    np.testing.assert_array_equal(scores["f1"], [2 / 3, 0.0])


# --- calibration ------------------------------------------------------------------------------

def _proba_with_confidence(confidence: list[float], num_classes: int = 4) -> np.ndarray:
    """Class 0 gets `confidence`, the other classes share the rest: class 0 is the prediction."""
    confidence = np.asarray(confidence)
    proba = np.repeat(((1 - confidence) / (num_classes - 1))[:, None], num_classes, axis=1)
    proba[:, 0] = confidence
    return proba


def test_expected_calibration_error_on_hand_computed_bins():
    proba = _proba_with_confidence([0.3, 0.35, 0.6, 0.9, 0.95, 1.0])
    y = np.array([1, 0, 0, 0, 1, 0])  # right where the label is 0
    result = calibration(proba, y, bins=4)
    # bins of width 0.25: (0.25, 0.5] holds 0.3, 0.35 (1 of 2 right), (0.5, 0.75] holds 0.6 (right),
    # (0.75, 1] holds 0.9, 0.95, 1.0 (2 of 3 right)
    assert [(b["lower"], b["upper"], b["count"]) for b in result["bins"]] == [(0.25, 0.5, 2), (0.5, 0.75, 1), (0.75, 1.0, 3)]
    assert [b["confidence"] for b in result["bins"]] == pytest.approx([0.325, 0.6, 0.95])
    assert [b["accuracy"] for b in result["bins"]] == pytest.approx([0.5, 1.0, 2 / 3])
    # ECE = sum of (bin share) * |accuracy - confidence| = (2 * 0.175 + 0.4 + 3 * 0.28333) / 6
    assert result["ece"] == pytest.approx(1.6 / 6)


def test_a_confidence_on_a_bin_edge_belongs_to_the_lower_bin():
    result = calibration(_proba_with_confidence([0.5]), np.array([0]), bins=4)
    assert (result["bins"][0]["lower"], result["bins"][0]["upper"]) == (0.25, 0.5)


def test_a_calibrated_model_has_zero_ece():
    proba = _proba_with_confidence([0.75] * 4)
    assert calibration(proba, np.array([0, 0, 0, 1]))["ece"] == pytest.approx(0.0)


def test_calibration_refuses_no_examples_and_no_bins():
    with pytest.raises(ValueError, match="no examples"):
        calibration(np.zeros((0, 3)), np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="at least one bin, got 0"):
        calibration(_proba_with_confidence([0.5]), np.array([0]), bins=0)


def test_the_reliability_diagram_is_written(tmp_path):
    bins = calibration(_proba_with_confidence([0.3, 0.6, 0.9]), np.array([0, 1, 0]), bins=15)["bins"]
    save_reliability_png(tmp_path / "fused.png", bins, title="fused")
    assert (tmp_path / "fused.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- hierarchical scores ----------------------------------------------------------------------

THREE_LEVELS = parse_taxonomy({
    "levels": ["fine", "mid", "top"],
    "classes": [
        {"fine": "a", "mid": "m1", "top": "t1"},
        {"fine": "b", "mid": "m1", "top": "t1"},
        {"fine": "c", "mid": "m2", "top": "t1"},
        {"fine": "d", "mid": "m3", "top": "t2"},
    ],
})


def test_hierarchical_scores_and_mistake_severity_on_three_levels():
    y_true = np.array([0, 0, 0, 0])
    y_pred = np.array([0, 1, 2, 3])  # right; wrong in m1; wrong in t1; wrong up to the root
    scores = hierarchical_metrics(THREE_LEVELS, y_true, y_pred)
    # augmented sets {fine, mid, top}: shared 3 + 2 + 1 + 0 of 4 * 3 on either side
    assert scores["hierarchical_precision"] == pytest.approx(6 / 12)
    assert scores["hierarchical_recall"] == pytest.approx(6 / 12)
    assert scores["hierarchical_f1"] == pytest.approx(0.5)
    assert scores["errors"] == 3
    assert scores["mistake_severity"] == pytest.approx((1 + 2 + 3) / 3)  # over the errors only


def test_mistake_severity_on_two_levels_is_one_within_a_parent_and_two_across():
    two_levels = parse_taxonomy({
        "levels": ["fine", "coarse"],
        "classes": [{"fine": "a", "coarse": "x"}, {"fine": "b", "coarse": "x"}, {"fine": "c", "coarse": "y"}],
    })
    scores = hierarchical_metrics(two_levels, np.array([0, 0, 0, 2, 2]), np.array([0, 1, 2, 2, 1]))
    assert scores["errors"] == 3
    assert scores["mistake_severity"] == pytest.approx((1 + 2 + 2) / 3)
    assert scores["hierarchical_f1"] == pytest.approx((2 + 1 + 0 + 2 + 0) / 10)


def test_no_errors_gives_hierarchical_f1_one_and_no_severity():
    scores = hierarchical_metrics(THREE_LEVELS, np.array([0, 3]), np.array([0, 3]))
    assert scores["hierarchical_f1"] == 1.0
    assert scores["errors"] == 0
    assert "mistake_severity" not in scores  # a mean over no mistakes


# --- bootstrap --------------------------------------------------------------------------------

def test_each_resample_draws_n_examples_and_the_seed_fixes_them():
    resamples = resample_counts(50, resamples=20, seed=3)
    counts = resamples.counts
    assert counts.shape == (20, 50) and resamples.group is None and resamples.resamples == 20
    np.testing.assert_array_equal(counts.sum(axis=1), 50)
    np.testing.assert_array_equal(counts, resample_counts(50, resamples=20, seed=3).counts)
    assert not np.array_equal(counts, resample_counts(50, resamples=20, seed=4).counts)


def test_vectorised_resampled_scores_match_scoring_each_resample():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, size=60)
    y_pred = np.where(rng.random(60) < 0.6, y_true, rng.integers(0, 4, size=60))
    resamples = resample_counts(60, resamples=5, seed=1)
    accuracy = resampled_means(resamples, y_true == y_pred)
    f1 = resampled_macro_f1(resamples, y_true, y_pred, num_classes=5)  # class 4 never occurs: scored 0
    for r in range(5):
        drawn = np.repeat(np.arange(60), resamples.counts[r].astype(int))
        assert accuracy[r] == pytest.approx((y_true[drawn] == y_pred[drawn]).mean())
        assert f1[r] == pytest.approx(macro_f1(confusion_matrix(y_true[drawn], y_pred[drawn], 5)))


def test_a_large_test_split_is_resampled_in_groups_whose_scores_are_the_groups_sums(monkeypatch):
    monkeypatch.setattr(evaluate, "MAX_BOOTSTRAP_DRAWS", 40)
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, size=100)
    y_pred = np.where(rng.random(100) < 0.7, y_true, rng.integers(0, 3, size=100))
    resamples = resample_counts(100, resamples=5, seed=2)
    assert resamples.counts.shape == (5, 40)
    assert sorted(np.bincount(resamples.group)) == [2] * 20 + [3] * 20  # 100 examples dealt into 40 groups
    accuracy = resampled_means(resamples, y_true == y_pred)
    f1 = resampled_macro_f1(resamples, y_true, y_pred, num_classes=3)
    for r in range(5):  # a drawn group brings all its examples
        drawn = np.repeat(np.arange(100), resamples.counts[r].astype(int)[resamples.group])
        assert accuracy[r] == pytest.approx((y_true[drawn] == y_pred[drawn]).mean())
        assert f1[r] == pytest.approx(macro_f1(confusion_matrix(y_true[drawn], y_pred[drawn], 3)))


def test_grouped_resamples_give_the_interval_of_a_binomial_proportion():
    correct = np.arange(200_000) % 5 != 0  # accuracy 0.8: standard error sqrt(0.8 * 0.2 / 200000)
    resamples = resample_counts(len(correct))
    assert resamples.counts.shape == (1000, evaluate.MAX_BOOTSTRAP_DRAWS)
    low, high = percentile_interval(resampled_means(resamples, correct))
    assert low < 0.8 < high
    assert high - low == pytest.approx(2 * 1.96 * np.sqrt(0.8 * 0.2 / 200_000), rel=0.15)


def test_percentile_interval_cuts_equal_tails():
    assert percentile_interval(np.arange(101.0), confidence=0.9) == pytest.approx((5.0, 95.0))


def test_the_accuracy_interval_has_the_width_of_a_binomial_proportion():
    correct = np.arange(400) % 5 != 0  # accuracy 0.8: standard error sqrt(0.8 * 0.2 / 400) = 0.02
    low, high = percentile_interval(resampled_means(resample_counts(400), correct))
    assert low < 0.8 < high
    assert high - low == pytest.approx(2 * 1.96 * 0.02, rel=0.15)


# --- McNemar ----------------------------------------------------------------------------------

def _pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([True] * both + [True] * only_a + [False] * only_b + [False] * neither)
    b = np.array([True] * both + [False] * only_a + [True] * only_b + [False] * neither)
    return a, b


def test_mcnemar_exact_on_few_discordant_pairs():
    result = mcnemar(*_pairs(both=50, only_a=3, only_b=1, neither=7))
    # two-sided binomial: 2 * P(X <= 1 | n=4, 1/2) = 2 * (1 + 4) / 16
    assert result == {"b": 3, "c": 1, "statistic": 1.0, "p_value": pytest.approx(10 / 16), "method": "exact"}
    assert mcnemar(*_pairs(both=5, only_a=10, only_b=0, neither=0))["p_value"] == pytest.approx(2 / 1024)


def test_mcnemar_chi_square_with_continuity_correction_on_many_discordant_pairs():
    result = mcnemar(*_pairs(both=100, only_a=20, only_b=10, neither=5))
    statistic = (20 - 10 - 1) ** 2 / 30
    assert (result["b"], result["c"], result["method"]) == (20, 10, "chi2")
    assert result["statistic"] == pytest.approx(statistic)
    assert result["p_value"] == pytest.approx(math.erfc(math.sqrt(statistic / 2)))  # chi-square, 1 dof


def test_mcnemar_of_models_that_always_agree_is_not_significant():
    result = mcnemar(*_pairs(both=5, only_a=0, only_b=0, neither=5))
    assert (result["b"], result["c"], result["p_value"]) == (0, 0, 1.0)


# --- latency ----------------------------------------------------------------------------------

class _FakeModel:
    """Takes 1 ms per image on a fake clock; the first timed pass is slowed by a hiccup."""

    def __init__(self) -> None:
        self.now, self.batch_sizes = 0.0, []

    def clock(self) -> float:
        return self.now

    def predict(self, batch: np.ndarray) -> None:
        self.batch_sizes.append(len(batch))
        self.now += 0.001 * len(batch) + (5.0 if len(self.batch_sizes) == 2 else 0.0)


def test_latency_is_the_median_pass_after_a_warm_up():
    model = _FakeModel()
    latency = measure_latency(model.predict, np.zeros((600, 2, 2)), batch_size=256, repeats=3, clock=model.clock)
    assert model.batch_sizes == [256] + [256, 256, 88] * 3  # warm-up, then three passes
    assert latency["ms_per_batch"] == pytest.approx(600 / 3)  # 0.6 s per pass of 3 batches, hiccup ignored
    assert latency["images_per_s"] == pytest.approx(1000)


def test_models_are_timed_in_turns_and_each_gets_its_median_pass():
    now, calls = [0.0], []

    def model(name: str, seconds_per_image: float):
        def predict(batch):
            calls.append(name)
            now[0] += seconds_per_image * len(batch) + (1.0 if len(calls) == 5 else 0.0)  # one hiccup
        return predict

    latency = measure_side_by_side({"slow": model("slow", 0.01), "fast": model("fast", 0.001)}, np.zeros((512, 2, 2)),
                                   batch_size=256, rounds=3, clock=lambda: now[0])
    # a warm-up batch each, then rounds of two batches each, the order rotating
    assert calls == ["slow", "fast"] + ["slow"] * 2 + ["fast"] * 2 + ["fast"] * 2 + ["slow"] * 2 + ["slow"] * 2 + ["fast"] * 2
    assert latency["slow"]["images_per_s"] == pytest.approx(100) and latency["fast"]["images_per_s"] == pytest.approx(1000)
    assert latency["fast"]["ms_per_batch"] == pytest.approx(256)


def test_latency_refuses_no_images():
    with pytest.raises(ValueError, match="latency needs images"):
        measure_latency(lambda batch: None, np.zeros((0, 2, 2)))


# --- the evaluate step, end to end on a tiny trained project ---------------------------------

TINY_TAXONOMY = """levels: [fine, coarse]
classes:
  - {fine: a, coarse: x}
  - {fine: b, coarse: x}
  - {fine: c, coarse: y}
"""


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """16x16 noise with a bright band whose row tells the class apart: easy to learn a little."""
    images = rng.integers(0, 60, size=(len(labels), 16, 16))
    for row, label in enumerate(labels):
        images[row, 4 * label : 4 * label + 4] += 150
    return images.astype(np.uint8)


def _tiny_project(root, seed: int, views: dict, distill: dict) -> tuple[Config, np.ndarray]:
    """Tiny images of the three classes as an npz source in `root`, with TINY_TAXONOMY: the
    project's configuration (one short epoch a view) and its test images."""
    rng = np.random.default_rng(seed)
    y_train, y_test = np.arange(150) % 3, np.arange(60) % 3
    source = root / "source.npz"
    test_images = _images(y_test, rng)
    np.savez(source, x_train=_images(y_train, rng), y_train=y_train, x_test=test_images, y_test=y_test)
    (root / "taxonomy.yaml").write_text(TINY_TAXONOMY)
    config = Config.model_validate({
        "data": {"source": {"format": "npz", "path": str(source)}},
        "validate": {"image_shape": [16, 16], "min_per_class": 1},
        "taxonomy": "taxonomy.yaml",
        "split": {"val_fraction": 0.2, "folds": 2},
        "views": views,
        "train": {"epochs": 1, "width": 4, "batch_size": 32, "threads": 1, "tta": False},
        "distill": distill,
    })
    return config, test_images


def _train_every_view(config: Config, paths: ProjectPaths) -> None:
    for step in (import_raw_step, clean_step, split_step):
        step(config, paths)
    for view in config.views:
        view_step(config, paths, view)
        train_step(config, paths, view, warn=lambda message: None)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProjectPaths, dict]:
    """Two fine views and a coarse one trained for one epoch on tiny images, fused, evaluated."""
    root = tmp_path_factory.mktemp("project")
    config, _ = _tiny_project(root, seed=0, views={
        "fine-16": {"level": "fine", "resolution": 16},
        "fine-8": {"level": "fine", "resolution": 8},
        "coarse-16": {"level": "coarse", "resolution": 16},
    }, distill={"enabled": True, "epochs": 1, "width": 4})
    paths = ProjectPaths(root)
    _train_every_view(config, paths)
    fuse_step(config, paths)
    distill_step(config, paths, warn=lambda message: None)
    return paths, evaluate_step(config, paths)


def test_evaluate_step_scores_every_model_with_intervals_and_calibration(evaluated):
    paths, metrics = evaluated
    assert set(metrics["test"]) == {"fine-16", "fine-8", "coarse-16", "fused", "student"}
    for scores in metrics["test"].values():
        assert scores["accuracy_ci_low"] <= scores["accuracy"] <= scores["accuracy_ci_high"]
        assert scores["macro_f1_ci_low"] <= scores["macro_f1"] <= scores["macro_f1_ci_high"]
        assert 0 <= scores["ece"] <= 1
        assert all(not isinstance(value, (dict, list)) for value in scores.values())  # flat, for MLflow
    fine, coarse = metrics["test"]["fused"], metrics["test"]["coarse-16"]
    assert fine["errors"] == round((1 - fine["accuracy"]) * 60)
    assert 0 <= fine["hierarchical_f1"] <= 1 and "coarse_accuracy" in fine
    assert "hierarchical_f1" not in coarse and "coarse_accuracy" not in coarse


def test_evaluate_step_compares_the_fusion_with_the_best_single_view(evaluated):
    _, metrics = evaluated
    best = metrics["best_single"]
    assert best in ("fine-16", "fine-8")
    ci = metrics["fused_minus_best_single_ci"]
    assert ci["low"] <= metrics["fused_minus_best_single"] <= ci["high"]
    mcnemar = metrics["mcnemar"]
    assert mcnemar["versus"] == best
    # b - c: the fused model's extra right answers, out of 60
    assert mcnemar["b"] - mcnemar["c"] == round(metrics["fused_minus_best_single"] * 60)
    assert 0 <= mcnemar["p_value"] <= 1


def test_evaluate_step_times_every_model_and_keeps_latency_out_of_the_comparison(evaluated):
    paths, metrics = evaluated
    latency = metrics["latency"]
    assert latency["images"] == 60 and latency["batch_size"] == evaluate_module.LATENCY_BATCH
    for model in ("fine-16", "fine-8", "coarse-16", "fused", "student"):
        assert latency[model]["ms_per_batch"] > 0 and latency[model]["images_per_s"] > 0
    assert json.loads(paths.latency.read_text()) == latency
    assert "latency" not in json.loads(paths.metrics.read_text())  # not a DVC metric: it measures the machine
    comparison = pd.read_csv(paths.comparison)
    assert list(comparison.columns) == ["model", *COMPARISON_COLUMNS, "recall_a", "recall_b", "recall_c"]
    assert comparison.set_index("model")["hierarchical_f1"].isna().to_dict() == {
        "fine-16": False, "fine-8": False, "coarse-16": True, "fused": False, "student": False
    }
    # Each fine class's recall, as per_class.json has it; a coarse view has none of the fine classes.
    per_class = json.loads((paths.evaluation / "per_class.json").read_text())
    recalls = comparison.set_index("model")[["recall_a", "recall_b", "recall_c"]]
    assert recalls.loc["fused"].tolist() == [row["recall"] for row in per_class["fused"]["per_class"]]
    assert recalls.loc["coarse-16"].isna().all()
    assert 0.5 <= comparison.set_index("model").loc["fused", "roc_auc"] <= 1


def test_evaluate_step_records_what_each_models_training_took(evaluated):
    paths, metrics = evaluated
    latency = metrics["latency"]
    trained = {}
    for view in ("fine-16", "fine-8", "coarse-16"):
        trained[view] = sum(e["seconds"] for e in json.loads((paths.model_dir(view) / "history.json").read_text()))
        assert trained[view] > 0 and latency[view]["train_seconds"] == pytest.approx(trained[view])
    assert latency["fused"]["train_seconds"] == pytest.approx(sum(trained.values()))  # its views'
    distilled = json.loads((paths.student_dir / "report.json").read_text())
    assert latency["student"]["train_seconds"] == pytest.approx(
        distilled["teacher"]["seconds"] + distilled["student"]["train_seconds"]
    )
    printed = format_table(metrics).splitlines()
    assert printed[0].split()[-2:] == ["train", "s"]
    fused = next(line for line in printed if line.startswith("fused "))
    assert fused.split()[-1] == f"{sum(trained.values()):.0f}"


def test_evaluate_step_writes_per_class_scores_and_reliability_diagrams(evaluated):
    paths, metrics = evaluated
    per_class = json.loads((paths.evaluation / "per_class.json").read_text())
    assert [row["class"] for row in per_class["coarse-16"]["per_class"]] == ["x", "y"]
    assert sum(row["support"] for row in per_class["fused"]["per_class"]) == 60
    assert sum(b["count"] for b in per_class["fused"]["reliability"]) == 60
    for model in metrics["test"]:
        assert (paths.evaluation / "reliability" / f"{model}.png").stat().st_size > 0


def test_a_specialist_learns_its_classes_alone_refines_the_fusion_and_is_scored_on_its_classes(tmp_path, monkeypatch):
    """A specialist of classes a and b (`classes: [x]`, their coarse class) beside a view of every
    class: its network learns from a and b's examples alone; the fusion is refined by it and
    served so; the evaluation scores it on a and b's test examples and never takes it for the
    best single view."""
    from dataclasses import replace

    from granular.pipeline import train as train_module
    from granular.problems import CLASSES
    from granular.serving.predict import load_fused

    config, test_images = _tiny_project(tmp_path, seed=1, views={
        "fine-16": {"level": "fine", "resolution": 16}, "fine-16-x": {"level": "fine", "resolution": 16, "classes": ["x"]},
    }, distill={"enabled": False})
    learned = {}
    fitter = train_module.FITTERS[CLASSES].networks

    def recording_fitter(config, paths, view, *args):
        fit = fitter(config, paths, view, *args)

        def fit_recording(number, tag, x_train, y_train, *rest):
            learned[view.name] = set(np.unique(y_train).tolist())
            return fit(number, tag, x_train, y_train, *rest)

        return fit_recording

    monkeypatch.setitem(train_module.FITTERS, CLASSES, replace(train_module.FITTERS[CLASSES], networks=recording_fitter))
    paths = ProjectPaths(tmp_path)
    _train_every_view(config, paths)
    assert learned == {"fine-16": {0, 1, 2}, "fine-16-x": {0, 1}}
    choice = fuse_step(config, paths)
    assert choice["summary"]["specialists"]["fine-16-x"]["classes"] == [0, 1]
    served = load_fused(paths.fused_dir).predict_proba(test_images)
    np.testing.assert_allclose(served, np.load(paths.fused_dir / "predictions.npz")["test_proba"], atol=1e-5)
    metrics = evaluate_step(config, paths)
    assert metrics["best_single"] == "fine-16" and metrics["fine_views"] == ["fine-16"]
    assert metrics["specialists"] == {"fine-16-x": ["a", "b"]}
    specialist = metrics["test"]["fine-16-x"]
    assert specialist["n"] == 40 and metrics["test"]["fine-16"]["n"] == 60
    # Its macro-F1 is over its two classes: the class it never answers does not count as a 0.
    f1 = [row["f1"] for row in json.loads((paths.evaluation / "per_class.json").read_text())["fine-16-x"]["per_class"]]
    assert specialist["macro_f1"] == pytest.approx((f1[0] + f1[1]) / 2)
    assert specialist["macro_f1_ci_low"] <= specialist["macro_f1"] <= specialist["macro_f1_ci_high"]
    assert "fine-16-x (on its classes)" in format_table(metrics)


# --- the table printed at the end of `granular run` -------------------------------------------

def test_the_run_table_shows_intervals_calibration_hierarchy_and_the_significance_of_the_fusion():
    fine = {"level": "fine", "accuracy": 0.93, "accuracy_ci_low": 0.925, "accuracy_ci_high": 0.935,
            "macro_f1": 0.929, "ece": 0.012, "hierarchical_f1": 0.96, "mistake_severity": 1.3}
    metrics = {
        "test": {"fine-28": fine, "coarse-28": {"level": "coarse", "accuracy": 0.98, "macro_f1": 0.97},
                 "fused": {**fine, "accuracy": 0.9318}},
        "best_single": "fine-28",
        "fused_minus_best_single": 0.0018,
        "fused_minus_best_single_ci": {"low": -0.001, "high": 0.0045},
        "mcnemar": {"versus": "fine-28", "b": 62, "c": 53, "statistic": 0.556, "p_value": 0.4559, "method": "chi2"},
        "latency": {"device": "cpu", "fine-28": {"ms_per_batch": 207.4, "images_per_s": 1234.4}},
    }
    lines = format_table(metrics).splitlines()
    assert lines[0].split() == ["model", "level", "accuracy", "95%", "CI", "macro_f1", "macro_f1", "95%", "CI", "ECE", "hF1",
                                "severity", "img/s"]
    assert lines[1].split() == ["fine-28", "fine", "0.9300", "[0.9250,", "0.9350]", "0.9290", "-", "0.0120", "0.9600", "1.30",
                                "1,234", "<-", "best", "single", "view"]
    assert lines[2].split() == ["coarse-28", "coarse", "0.9800", "-", "0.9700", "-", "-", "-", "-", "-"]  # none of these
    # Each figure ends where its header does, however wide the column's cells.
    def end(line: str, text: str) -> int:
        return line.index(text) + len(text)

    assert end(lines[1], "0.9350]") == end(lines[0], "95% CI") and end(lines[1], "0.0120") == end(lines[0], "ECE")
    assert lines[4] == "fused - best single view: +0.0018  95% CI [-0.0010, +0.0045]"
    assert lines[5] == "McNemar, fused vs fine-28: fused alone right b=62, alone wrong c=53, p = 0.456 (chi2)"


def test_the_run_table_without_a_fine_view_has_no_comparison_lines():
    table = format_table({"test": {"coarse-28": {"level": "coarse", "accuracy": 0.98, "macro_f1": 0.97}},
                          "best_single": None})
    assert len(table.splitlines()) == 2


def test_balanced_accuracy_is_the_mean_recall_of_the_classes_present():
    from granular.core.evaluate import balanced_accuracy, confusion_matrix

    y = np.array([0] * 95 + [1] * 5)
    always_zero = confusion_matrix(y, np.zeros(100, dtype=int), 3)  # class 2 never occurs
    assert balanced_accuracy(always_zero) == pytest.approx(0.5)  # accuracy 0.95, no positive found
    found = confusion_matrix(y, np.array([0] * 95 + [1, 1, 1, 0, 0]), 3)
    assert balanced_accuracy(found) == pytest.approx((1 + 0.6) / 2)


def test_resampled_aucs_are_sklearns_with_each_resamples_counts_as_weights():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    proba = rng.dirichlet(np.ones(3), 300)
    proba[:60] = np.round(proba[:60], 1)  # ties, which count half
    resamples = resample_counts(300, resamples=12)
    resampled = evaluate.resampled_ranking(resamples, y, proba)
    for r, weights in enumerate(resamples.counts):
        roc = np.mean([roc_auc_score(y == k, proba[:, k], sample_weight=weights) for k in range(3)])
        pr = np.mean([average_precision_score(y == k, proba[:, k], sample_weight=weights) for k in range(3)])
        assert resampled["roc_auc"][r] == pytest.approx(roc, abs=1e-12)
        assert resampled["pr_auc"][r] == pytest.approx(pr, abs=1e-12)
    # Two classes: the rarer one's, as the point estimate.
    rare = (rng.random(300) < 0.1).astype(int)
    two = np.c_[1 - proba[:, 0], proba[:, 0]]
    resampled = evaluate.resampled_ranking(resamples, rare, two)
    weights = resamples.counts[0]
    assert resampled["roc_auc"][0] == pytest.approx(roc_auc_score(rare, two[:, 1], sample_weight=weights), abs=1e-12)
    assert resampled["pr_auc"][0] == pytest.approx(average_precision_score(rare, two[:, 1], sample_weight=weights), abs=1e-12)


def test_grouped_resamples_weigh_each_example_by_its_groups_count(monkeypatch):
    from sklearn.metrics import roc_auc_score

    monkeypatch.setattr(evaluate, "MAX_BOOTSTRAP_DRAWS", 50)
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    proba = np.c_[1 - rng.random(400), rng.random(400)]
    resamples = resample_counts(400, resamples=5)
    assert resamples.group is not None
    resampled = evaluate.resampled_ranking(resamples, y, proba)
    for r in range(5):
        weights = resamples.counts[r][resamples.group]
        rarer = int(np.argmin(np.bincount(y)))
        assert resampled["roc_auc"][r] == pytest.approx(roc_auc_score(y == rarer, proba[:, rarer], sample_weight=weights), abs=1e-12)
