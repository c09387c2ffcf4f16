"""Classification: each model answers the probabilities of its classes. Fused by the class
fusions (granular/core/fusion.py), scored by accuracy and its family (balanced accuracy,
macro-F1, ROC- and PR-AUC, calibration, hierarchical scores), with per-class reports and
confusion images; the floor is the training split's majority class, and the fusion's gain over
the best single view (in promotion.metric, accuracy by default) is tested by McNemar's test in
accuracy, by a paired bootstrap test in any other metric."""
from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
import pandas as pd

from granular.config import Config, ViewConfig
from granular.core import evaluate, fusion, report
from granular.core.cascade import CASCADE
from granular.core.importance import ImportanceScores
from granular.core.partition import VAL_SPLIT
from granular.core.promotion import Check, above_floor, beats, bootstrap_gain, p_value_text
from granular.core.taxonomy import Taxonomy
from granular.core.threshold import choose_threshold
from granular.problems.base import Problem, ProjectReads, TestOutputs, fitted_on
from granular.problems.scoring import (
    COMPARISON_COLUMNS, best_in, bootstrap_record, score_model, scores_by_segment, write_class_details,
)
from granular.store.atomic import write_csv
from granular.store.paths import ProjectPaths

# The baseline that answers the training split's majority class for every example: the floor a
# model must clear (a modality's `baselines` may include it).
MAJORITY = "majority"


def class_scores(proba: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Accuracy and log-loss of class probabilities."""
    return float((proba.argmax(axis=1) == y).mean()), evaluate.log_loss(proba, y)


class Classes(Problem):
    name = "classification"
    headline = "accuracy"
    headline_label = "accuracy"
    gain_unit = ""
    floor = MAJORITY
    epoch_score = ("val_accuracy", "validation accuracy")
    segment_score = ("accuracy", "accuracy", ".4f")
    report_images = ("confusion/fused.png", "reliability/fused.png")
    importance = ImportanceScores(class_scores, "accuracy_drop", "log_loss_rise")
    numeric_target = False

    def fuse(
        self, config: Config, taxonomy: Taxonomy, reads: ProjectReads, served: dict[str, dict[str, np.ndarray]],
    ) -> tuple[dict, dict[str, np.ndarray]]:
        """The fusion of class probabilities (granular/core/fusion.py), fitted on the validation
        split, or out of fold on a small table's training and validation rows (reads.fitting_rows);
        its decision threshold on the same rows' cross-fitted probabilities (each fold's from a
        fusion fitted on the other folds). Its test probabilities, and the cross-fitted ones of the
        validation split."""
        classes = taxonomy
        parents = {v.name: classes.parent[v.level] for v in config.views.values()}
        parents |= {name: classes.parent[classes.fine] for name in served["fusion"]}
        rows = reads.fitting_rows()
        probas = reads.fitting_outputs() | served["fusion"]
        specialists = reads.specialists(classes)
        fuser, choice = fusion.choose_fusion(
            config.fusion, parents, probas, rows["label"], folds=rows["fold"], specialists=specialists,
            metric=config.promotion.metric or self.headline,
        )
        held_out = fusion.held_out_proba(
            partial(fusion.build_fuser, choice["strategy"], parents, config.fusion, specialists), len(classes.fine_names),
            probas, rows["label"], rows["fold"],
        )
        choice["fitted_on"] = fitted_on(rows)
        if config.fusion.threshold_metric:
            choice["threshold"] = _threshold(config, reads, classes, held_out, rows["label"])
        test_probas = reads.outputs("test") | served["test"]
        val = rows["split"] == VAL_SPLIT
        return choice, {"test_proba": fuser.predict_proba(test_probas), "val_proba": held_out[val]}

    def evaluate(
        self, config: Config, paths: ProjectPaths, taxonomy: Taxonomy, reads: ProjectReads, others: TestOutputs,
    ) -> dict:
        """Accuracy, balanced accuracy, macro-F1, ROC- and PR-AUC with bootstrap 95% intervals (the
        same resamples for every model), per-class scores, calibration, and for fine models the
        hierarchical scores and the accuracy they imply at coarser levels; the fusion against the
        best single fine view in the run's one metric (promotion.metric, else accuracy): a paired
        interval and a paired test (McNemar's for accuracy, else the paired bootstrap)."""
        y_fine = reads.rows("test")["label"]
        test_probas = reads.outputs("test")
        entries = [(v.name, v.level, test_probas[v.name]) for v in config.views.values()]
        entries.append(("fused", taxonomy.fine, others.fused))
        # A target of two classes may be decided by a threshold (the fusion record's): the fused
        # model's answers are then those, as served.
        decided = {"fused": others.fusion.get("threshold")}
        entries += [(name, taxonomy.fine, proba) for name, proba in others.student.items()]
        if others.cascade:  # it answers as the fused model does, each answer from one of its stages
            entries.append((CASCADE, taxonomy.fine, others.cascade["test_proba"]))
            decided[CASCADE] = decided["fused"]
            # Each cheaper stage alone too (fine-28-no-tta, ...); a model run as it is has its row already.
            for name, proba in zip(others.cascade["stages"][:-1], others.cascade["stages_test_proba"]):
                if name not in {entry[0] for entry in entries}:
                    entries.append((name, taxonomy.fine, proba))
                    decided[name] = decided["fused"]
        baselines = others.baselines  # what the views and fusion must beat
        for name, proba in baselines.items():
            entries.append((name, taxonomy.fine, proba))
        resamples = evaluate.resample_counts(len(y_fine))
        specialists = reads.specialists(taxonomy)
        test, details = {}, {}
        for name, level, proba in entries:
            if name in specialists:  # scored on its classes' examples, its answers among its classes
                test[name], details[name] = _score_specialist(taxonomy, y_fine, proba, specialists[name])
            else:
                test[name], details[name] = score_model(taxonomy, level, y_fine, proba, resamples, decided.get(name))
        fine_views = [v.name for v in config.views.values() if v.level == taxonomy.fine and v.name not in specialists]
        metric = config.promotion.metric or self.headline
        best = best_in(fine_views, test, metric)
        metrics = {"modality": config.data.modality, "metric": metric, "test": test, "best_single": best,
                   "fine_views": fine_views}
        if specialists:  # scored on their classes' examples alone
            metrics["specialists"] = {name: [taxonomy.fine_names[k] for k in ids] for name, ids in specialists.items()}
        by_segment = _accuracy_by_segment(config, reads, taxonomy, y_fine, test_probas | baselines)
        if by_segment:
            metrics["segments"] = by_segment
        if best:
            metrics["fused_minus_best_single"] = test["fused"][metric] - test[best][metric]
            metrics.update(_fused_versus_best(
                details["fused"], details[best], best, metric, metrics["fused_minus_best_single"], resamples,
            ))
        if others.cascade:
            metrics[CASCADE] = _cascade_versus_fused(others.cascade, details, test)
        for name in baselines:  # the boosted trees to beat, and the majority class as the floor
            metrics[MAJORITY if name == MAJORITY else "baseline"] = {"model": name}
        metrics["bootstrap"] = bootstrap_record(resamples)
        _write_evaluation(paths, taxonomy, y_fine, test, details)
        return metrics

    def floor_outputs(self, train_targets: np.ndarray, sizes: dict[str, int], num_classes: int) -> dict[str, np.ndarray]:
        """The training split's share of each class, for every example."""
        shares = np.bincount(train_targets, minlength=num_classes) / len(train_targets)
        return {split: np.tile(shares, (size, 1)) for split, size in sizes.items()}

    def floor_checks(self, metrics: dict, metric: str) -> list[Check]:
        if MAJORITY not in metrics:
            return []
        fused, majority = metrics["test"]["fused"], metrics["test"][metrics[MAJORITY]["model"]]
        if metric == "accuracy":
            return [_above_majority(fused, majority)]
        return [above_floor(fused, majority, metric, "the majority class")]

    def significance_check(self, metrics: dict, best: str, max_p_value: float) -> Check:
        """McNemar's test where the evaluation compared in accuracy (metrics.json's "mcnemar",
        written before "significance" was), else its paired bootstrap test."""
        test = metrics.get("significance") or {"test": "mcnemar"}
        if test["test"] == "mcnemar":
            return _mcnemar_gain(metrics.get("mcnemar") or {}, best, max_p_value)
        return bootstrap_gain(test, best, metrics.get("metric", self.headline), max_p_value)

    def comparison_rows(self, metrics: dict) -> list[dict[str, str]]:
        return report.class_rows(metrics)

    def validation_score(self, outputs: np.ndarray, y: np.ndarray) -> dict[str, float]:
        return {"val_accuracy": float((outputs.argmax(1) == y).mean())}

    def importance_targets(self, config: Config, taxonomy: Taxonomy, truth: np.ndarray) -> dict[str, np.ndarray]:
        """Every view, on the test examples' classes at its level."""
        return {view.name: taxonomy.map_labels(truth, view.level) for view in config.views.values()}

    def fused_answers(self, fused) -> Callable:
        return fused.predict_proba


CLASSES = Classes()


def _threshold(config: Config, reads: ProjectReads, classes: Taxonomy, held_out: np.ndarray, y: np.ndarray) -> dict:
    """The decision threshold of a target of two classes (fusion.threshold_metric), on the fused
    model's cross-fitted probabilities of the rows it was fitted on; its positive class is
    fusion.positive_class, or the rarer one in training."""
    names = list(classes.fine_names)
    if len(names) != 2:
        raise ValueError(f"fusion.threshold_metric: a decision threshold is for a target of two classes; this one has {len(names)}")
    positive = config.fusion.positive_class
    if positive is None:
        positive = names[int(np.argmin(np.bincount(reads.rows("train")["label"], minlength=2)))]
    elif positive not in names:
        raise ValueError(f"fusion.positive_class: {positive!r} is not a class of the target {names}")
    index = names.index(positive)
    return {"positive": positive, "positive_index": index, **choose_threshold(held_out[:, index], y == index, config.fusion.threshold_metric)}


def _score_specialist(taxonomy: Taxonomy, y_fine: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> tuple[dict, dict]:
    """A specialist answers only which of its classes an example of them is: its scores on the
    test examples of those classes, its probabilities renormalised over them."""
    rows = np.isin(y_fine, classes)
    group = proba[rows][:, classes]
    own = np.zeros_like(proba[rows])
    own[:, classes] = group / group.sum(axis=1, keepdims=True)
    resamples = evaluate.resample_counts(int(rows.sum()))
    scores, details = score_model(taxonomy, taxonomy.fine, y_fine[rows], own, resamples)
    # Macro-F1 over its own classes: the others, never its answer, would each count as 0.
    y_own, predicted_own = np.searchsorted(classes, y_fine[rows]), np.searchsorted(classes, details["predicted"])
    scores["macro_f1"] = evaluate.macro_f1(evaluate.confusion_matrix(y_own, predicted_own, len(classes)))
    samples = evaluate.resampled_macro_f1(resamples, y_own, predicted_own, len(classes))
    scores["macro_f1_ci_low"], scores["macro_f1_ci_high"] = evaluate.percentile_interval(samples)
    # Every test example's row of the predictions file: its answer among its classes.
    details["predicted"] = classes[proba[:, classes].argmax(axis=1)]
    return scores, details


def _fused_versus_best(fused: dict, best_detail: dict, best: str, metric: str, gain: float, resamples: evaluate.Resamples) -> dict:
    """Is the fusion's gain over the best single view in `metric` (`gain` on the whole test
    split) more than chance? A paired bootstrap interval of the difference, and a paired test:
    McNemar's on the examples they disagree on for accuracy, else the paired bootstrap test of
    the same resamples. `identical`: the two answer alike on every test example."""
    identical = bool(np.array_equal(fused["predicted"], best_detail["predicted"]))
    if metric == "accuracy":
        difference = evaluate.resampled_means(resamples, fused["correct"].astype(np.float32) - best_detail["correct"])
        mcnemar = {"versus": best, **evaluate.mcnemar(fused["correct"], best_detail["correct"])}
        test = {"test": "mcnemar", "versus": best, "p_value": mcnemar["p_value"], "b": mcnemar["b"], "c": mcnemar["c"]}
        extra = {"mcnemar": mcnemar}
    else:
        difference = fused["samples"][metric] - best_detail["samples"][metric]
        test = {"test": "paired_bootstrap", "versus": best, **evaluate.paired_bootstrap_test(difference, gain)}
        extra = {}
    low, high = evaluate.percentile_interval(difference)
    return {"fused_minus_best_single_ci": {"low": low, "high": high}, **extra,
            "significance": {**test, "identical": identical}}


def _cascade_versus_fused(cascade: dict, details: dict, test: dict) -> dict:
    """What the cascade gives up for its speed: its accuracy below the fused model's, McNemar's
    test of the two, and the share of the test examples each stage answered."""
    answered = np.bincount(cascade["test_stage"], minlength=len(cascade["stages"])) / len(cascade["test_stage"])
    return {
        "stages": list(cascade["stages"]),
        "answered": {name: float(share) for name, share in zip(cascade["stages"], answered)},
        "accuracy_drop": test["fused"]["accuracy"] - test[CASCADE]["accuracy"],
        "mcnemar": {"versus": "fused", **evaluate.mcnemar(details[CASCADE]["correct"], details["fused"]["correct"])},
    }


def _write_evaluation(paths: ProjectPaths, taxonomy: Taxonomy, y_fine: np.ndarray, test: dict, details: dict) -> None:
    """Confusion and reliability images, per-class scores, every test prediction, the models compared."""
    write_class_details(paths, test, details)
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


def _accuracy_by_segment(
    config: Config, reads: ProjectReads, taxonomy: Taxonomy, y_fine: np.ndarray, test_probas: dict[str, np.ndarray]
) -> dict:
    """For each segmented view, per test segment: its expert's accuracy next to the global
    model's on the same examples, so the user sees where the experts earn their keep."""
    def right(view: ViewConfig) -> dict[str, np.ndarray]:
        y = taxonomy.map_labels(y_fine, view.level)
        out = {"accuracy": test_probas[view.name].argmax(1) == y}
        if view.global_model in test_probas:  # absent when it failed to train and the run went on
            out["global_accuracy"] = test_probas[view.global_model].argmax(1) == y
        return out

    return scores_by_segment(config, reads, right, lambda correct: float(correct.mean()))


def _above_majority(fused: dict, majority: dict) -> Check:
    """Better than answering the majority class for every example, in accuracy and in balanced
    accuracy (on a 5%-positive table the first alone lets a model that never finds one through).
    Compared in another metric, the floor is that metric alone (above_floor)."""
    short = [
        f"{name} {fused[key]:.4f} against {majority[key]:.4f}"
        for key, name in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"))
        if not beats(fused[key], majority[key], 0.0)
    ]
    if short:
        return Check(False, f"the fused model does no better than the majority class: {'; '.join(short)}")
    return Check(True, (
        f"the fused model does better than the majority class (accuracy {fused['accuracy']:.4f} against "
        f"{majority['accuracy']:.4f}, balanced accuracy {fused['balanced_accuracy']:.4f} against "
        f"{majority['balanced_accuracy']:.4f})"
    ))


def _mcnemar_gain(test: dict, best: str, max_p_value: float) -> Check:
    """McNemar's test of the fused model against `best`: b counts the test examples only the
    fused model gets right, c those only `best` gets right (granular/core/evaluate.py)."""
    if not {"versus", "p_value", "b", "c"} <= test.keys():
        return Check(False, (
            f"significance is mcnemar, but the evaluation has no McNemar test (mcnemar.p_value, b, c) "
            f"of the fused model against {best}"
        ))
    if test["versus"] != best:
        return Check(False, (
            f"the evaluation's McNemar test is against {test['versus']}, not the best single view {best}, "
            f"so it cannot tell the gain over {best} from noise"
        ))
    p_value = p_value_text(test["p_value"])
    counts = f"({test['b']} test examples only the fused model gets right, {test['c']} only {best})"
    if test["p_value"] >= max_p_value:
        return Check(False, (
            f"the gain over {best} is not significant: McNemar p = {p_value} is not below {max_p_value:g} {counts}"
        ))
    if test["b"] <= test["c"]:  # a negative margin let a worse model past the gain check
        return Check(False, (
            f"the fused model is significantly worse than {best}, not better: "
            f"McNemar p = {p_value} < {max_p_value:g} {counts}"
        ))
    return Check(True, f"the gain over {best} is significant: McNemar p = {p_value} < {max_p_value:g} {counts}")
