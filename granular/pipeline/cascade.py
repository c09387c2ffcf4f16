"""Step cascade: measure what each stage costs here, fit the thresholds on the validation split,
and write the cascade as a servable folder (data/cascade/) with its answers to the validation
and test examples."""
from __future__ import annotations

import shutil

import numpy as np

from granular.config import Config
from granular.config.cascade import STUDENT
from granular.core import cascade, evaluate, plots
from granular.modalities import modality_for
from granular.pipeline.reads import split_rows
from granular.serving.cascade import CASCADE_FILE, FUSED_DIR, STUDENT_DIR, build_cascade
from granular.store.atomic import atomic_dir, read_npz, write_json, write_npz
from granular.store.paths import ProjectPaths

PREDICTIONS = "predictions.npz"
CURVE_FILE = "accuracy_vs_cost.png"
COST_EXAMPLES = 1024  # validation examples each stage is timed on
COST_BATCH = 256  # ... in batches of this many, as served
COST_REPEATS = 5


def cascade_step(config: Config, paths: ProjectPaths) -> dict:
    """Every stage's probabilities of the validation and test examples (the fused model's
    validation ones cross-fitted, as its fusion was chosen), each stage's measured seconds per
    example, and the cheapest thresholds whose validation accuracy stays within
    cascade.max_accuracy_drop of the fused model's; data/cascade/ gets the record, the bundles
    it runs and its answers. Without stages, a record that says so."""
    from granular.serving.predict import FusedClassifier  # torch is imported only by the steps that need it

    settings = config.cascade
    if not settings.enabled:  # DVC runs every stage: leave a record that says why it is empty
        record = {"enabled": False}
        with atomic_dir(paths.cascade_dir) as staging:
            write_json(staging / CASCADE_FILE, record)
        return record
    fused = FusedClassifier.load(paths.fused_dir)
    uses_student = any(spec.model == STUDENT for spec in settings.stages)
    student = FusedClassifier.load(paths.student_dir) if uses_student else None
    model = build_cascade(settings.stages, [cascade.NEVER] * (len(settings.stages) - 1), fused, student)
    raw = modality_for(config).raw_inputs(config, paths, ("val", "test"))
    val, y_test = split_rows(paths, "val"), split_rows(paths, "test")["label"]
    fused_outputs = read_npz(paths.fused_dir / PREDICTIONS)
    probas = {
        split: [stage.answer(raw[split]) for stage in model.stages[:-1]] + [fused_outputs[f"{split}_proba"]]
        for split in ("val", "test")
    }
    seconds = _seconds_per_example([stage.answer for stage in model.stages], raw["val"])
    fit = cascade.fit_thresholds(probas["val"], val["label"], seconds, settings.max_accuracy_drop)
    held_out = cascade.cross_fitted(probas["val"], val["label"], val["fold"], seconds, settings.max_accuracy_drop)
    thresholds = fit.chosen.thresholds
    test_stage = cascade.answering_stage([cascade.confidence(p) for p in probas["test"][:-1]], thresholds)
    test_point = cascade.score(
        [cascade.confidence(p) for p in probas["test"][:-1]], [p.argmax(axis=1) == y_test for p in probas["test"]],
        thresholds, seconds,
    )
    record = {
        "enabled": True,
        "max_accuracy_drop": settings.max_accuracy_drop,
        "stages": [
            {"name": spec.name, "spec": spec.model_dump(), "threshold": None if t == cascade.NEVER else t,
             "seconds_per_example": float(s)}
            for spec, t, s in zip(settings.stages, [*thresholds, cascade.NEVER], seconds)
        ],
        "validation": {
            "fused_accuracy": float((probas["val"][-1].argmax(axis=1) == val["label"]).mean()),
            "chosen": fit.chosen.to_json(), "cross_fitted": held_out.to_json(),
            "frontier": [point.to_json() for point in fit.frontier],
        },
        "test": {"fused_accuracy": float((probas["test"][-1].argmax(axis=1) == y_test).mean()), **test_point.to_json()},
        "speedup": float(seconds[-1] / fit.chosen.seconds),  # over the fused model, by the measured costs
    }
    with atomic_dir(paths.cascade_dir) as staging:
        write_json(staging / CASCADE_FILE, record)
        plots.save_cascade_curve_png(staging / CURVE_FILE, record)
        shutil.copytree(paths.fused_dir, staging / FUSED_DIR, ignore=shutil.ignore_patterns(PREDICTIONS))
        if uses_student:
            shutil.copytree(paths.student_dir, staging / STUDENT_DIR, ignore=shutil.ignore_patterns(PREDICTIONS))
        write_npz(
            staging / PREDICTIONS, test_proba=cascade.routed_proba(probas["test"], test_stage), test_stage=test_stage,
            stages_test_proba=np.stack(probas["test"][:-1]),  # each cheaper stage's own answers, to score it alone
        )
    return record


def _seconds_per_example(answers: list, images: np.ndarray) -> np.ndarray:
    """Seconds per example of each of `answers` over the first COST_EXAMPLES examples, in
    batches: the stages timed in turn, round after round, so that the machine's other work falls
    on all alike, and each one's fastest round (that work only ever adds time)."""
    images = images[:COST_EXAMPLES]
    batches = [images[start : start + COST_BATCH] for start in range(0, len(images), COST_BATCH)]
    rounds = [[evaluate.time_passes(answer, batches, repeats=1)[0] for answer in answers] for _ in range(COST_REPEATS)]
    return np.min(rounds, axis=0) / len(images)
