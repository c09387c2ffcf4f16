"""Step evaluate: every view, the fusion, the student and any baseline on the test split, as
their problem scores them (granular/problems/: accuracy and its family with per-class scores,
calibration and hierarchical scores; a regression target's RMSE, MAE and R²), with intervals;
feature importance and inference latency (data/evaluation/)."""
from __future__ import annotations

import json
import logging
import time
from typing import Callable

import numpy as np

from granular.config import Config
from granular.core import evaluate
from granular.core.cascade import CASCADE
from granular.core.importance import Progress, columns_to_score, permutation_importance
from granular.core.taxonomy import Taxonomy
from granular.modalities import load_view_model, modality_for
from granular.pipeline.cascade import PREDICTIONS
from granular.pipeline.distill import STUDENT
from granular.pipeline.fuse import BASELINE_FIGURES, BASELINE_PREDICTIONS
from granular.pipeline.reads import FOLDS_FILE, ProjectReads, project_taxonomy
from granular.problems import problem_for
from granular.problems.base import TestOutputs
from granular.serving.bundle import FUSION_FILE
from granular.store.atomic import read_npz, write_json
from granular.store.paths import ProjectPaths

LATENCY_IMAGES = 1024  # test images timed per model: a few seconds in all, on a CPU too
LATENCY_BATCH = 256
IMPORTANCE_REPEATS = 3  # shuffles of each column
PROGRESS_SECONDS = 5.0  # at most one progress line of a model's importance this often

logger = logging.getLogger(__name__)


def evaluate_step(config: Config, paths: ProjectPaths) -> dict:
    """Every view and the fusion on the test split, scored by their problem (the same bootstrap
    resamples for every model), the fusion against the best single fine view with its paired
    test; feature importance and inference latency."""
    taxonomy = project_taxonomy(config, paths)
    metrics = problem_for(config).evaluate(config, paths, taxonomy, ProjectReads(config, paths), _test_outputs(config, paths))
    served = served_models(config, paths)  # loaded once, for the importance and the latency
    rows = modality_for(config).importance_rows(config, paths) if config.importance.max_columns else None
    if rows is not None:
        write_json(paths.importance, _feature_importance(config, taxonomy, served, *rows))
    else:  # none measured: an earlier run's would say otherwise
        paths.importance.unlink(missing_ok=True)
    write_json(paths.metrics, metrics)
    # Figures of this machine, beside the metrics, so that metrics.json is the same for the same
    # data, settings and code, and `dvc metrics diff` shows model quality alone.
    figures = json.loads((paths.baselines_dir / BASELINE_FIGURES).read_text())
    latency = _latency(config, paths, served) | {name: figures for name, figures in figures.items() if figures}
    for name, seconds in _training_seconds(config, paths, figures).items():
        latency[name] = {**latency.get(name, {}), "train_seconds": seconds}
    write_json(paths.latency, latency)
    return {**metrics, "latency": latency}


def _test_outputs(config: Config, paths: ProjectPaths) -> TestOutputs:
    """What the fuse step (and the distill step) wrote of the models beside the views."""
    student, cascade = {}, {}
    if config.distill.enabled:
        student[STUDENT] = read_npz(paths.student_dir / "predictions.npz")["test_proba"]
    if config.cascade.enabled:
        cascade = {**read_npz(paths.cascade_dir / PREDICTIONS), "stages": [stage.name for stage in config.cascade.stages]}
    return TestOutputs(
        fused=read_npz(paths.fused_dir / "predictions.npz")["test_proba"],
        baselines=read_npz(paths.baselines_dir / BASELINE_PREDICTIONS),
        student=student,
        fusion=json.loads((paths.fused_dir / FUSION_FILE).read_text()),
        cascade=cascade,
    )


def served_models(config: Config, paths: ProjectPaths) -> dict:
    """Every view's model and the fused model (and the student, and the cascade) as they serve,
    loaded from their files: `runtime`, `views` (name -> ViewModel), `fused`, `student` and
    `cascade` (or None)."""
    from granular.nn.device import select_runtime  # torch is imported only by the steps that need it
    from granular.serving.cascade import load_cascade
    from granular.serving.predict import FusedClassifier, load_fused

    runtime = select_runtime(precision=config.train.precision)
    return {
        "runtime": runtime,
        "views": {name: load_view_model(paths.model_dir(name), runtime) for name in config.views},
        "fused": load_fused(paths.fused_dir),
        "student": FusedClassifier.load(paths.student_dir) if config.distill.enabled else None,
        "cascade": load_cascade(paths.cascade_dir) if config.cascade.enabled else None,
    }


def _feature_importance(config: Config, taxonomy: Taxonomy, served: dict, raw, truth: np.ndarray) -> dict:
    """Permutation importance on the raw test examples: of each view's columns (a segment
    column too, which routes rows to experts) for the view, and of every input column for the
    fused model, as it serves; scored as the problem scores its answers. A model that reads more
    than importance.max_columns columns has a random sample of that many scored (drawn from
    split.seed: the same columns of every model that reads the same ones)."""
    problem = problem_for(config)
    runtime = served["runtime"]
    models = {}  # name -> (its predict, its targets, the columns it reads)
    for name, y in problem.importance_targets(config, taxonomy, truth).items():
        view = served["views"][name]
        models[name] = (lambda inputs, view=view: view.predict(inputs, runtime), y, view.reader.columns_read())
    models["fused"] = (problem.fused_answers(served["fused"]), truth, list(served["fused"].inputs.columns))
    measured = {}
    for name, (predict, y, columns) in models.items():
        scored = columns_to_score(columns, config.importance.max_columns, config.split.seed)
        if len(scored) < len(columns):
            logger.info("importance: %s reads %d columns; scoring a random sample of %d (importance.max_columns)",
                        name, len(columns), len(scored))
        measured[name] = {
            "columns_read": len(columns), "columns_scored": len(scored), "capped": len(scored) < len(columns),
            "scores": permutation_importance(
                predict, raw, y, scored, problem.importance, repeats=IMPORTANCE_REPEATS, seed=config.split.seed,
                progress=_progress_lines(name),
            ),
        }
    return {"rows": int(len(raw)), "repeats": IMPORTANCE_REPEATS, "max_columns": config.importance.max_columns,
            "models": measured}


def _progress_lines(model: str) -> Progress:
    """A progress line of `model`'s importance at most every PROGRESS_SECONDS, and at its end."""
    started = last = time.perf_counter()

    def report(done: int, total: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if done == total or now - last >= PROGRESS_SECONDS:
            last = now
            logger.info("importance: %s %d/%d columns, %.1f s", model, done, total, now - started)

    return report


def _latency(config: Config, paths: ProjectPaths, served: dict) -> dict:
    """Inference speed of each model as it serves, on the first test images at full size, the
    models timed in turns (evaluate.measure_side_by_side)."""
    images = modality_for(config).raw_inputs(config, paths, ("test",), LATENCY_IMAGES)["test"]
    latency = {"device": served["runtime"].name, "images": int(len(images)), "batch_size": LATENCY_BATCH}
    return latency | evaluate.measure_side_by_side(served_predictors(config, served), images, LATENCY_BATCH)


def served_predictors(config: Config, served: dict) -> dict[str, Callable]:
    """Each served model (of `served_models`) by name, as a function of a batch of raw inputs
    that answers what the model serves: every view, `fused`, and the student and the cascade
    when there are."""
    runtime = served["runtime"]
    predictors = {
        name: (lambda batch, model=model: model.predict(batch, runtime)) for name, model in served["views"].items()
    }
    predictors["fused"] = problem_for(config).fused_answers(served["fused"])
    if served["student"] is not None:
        predictors[STUDENT] = served["student"].predict_proba
    if served["cascade"] is not None:
        predictors[CASCADE] = served["cascade"].predict_proba
        for stage in served["cascade"].stages[:-1]:  # alone, as the evaluation scores them
            predictors.setdefault(stage.name, stage.answer)
    return predictors


def _training_seconds(config: Config, paths: ProjectPaths, baseline_figures: dict) -> dict[str, float]:
    """What each model's training took on this machine, so that its accuracy can be weighed
    against its cost: a view's networks' epochs; the fused model's, every input's (its views and
    the baselines it fuses; fitting the fusion itself takes seconds); the student's, the
    teacher's pass over the training examples and its own epochs; the cascade's, the fused
    model's and the student's where it is a stage."""
    seconds = {view: _view_seconds(paths.model_dir(view)) for view in config.views}
    seconds["fused"] = sum(seconds.values()) + sum(f.get("train_seconds", 0.0) for f in baseline_figures.values())
    if config.distill.enabled:
        report = json.loads((paths.student_dir / "report.json").read_text())
        seconds[STUDENT] = report["teacher"]["seconds"] + report["student"]["train_seconds"]
    if config.cascade.enabled:  # fitting its thresholds takes seconds
        seconds[CASCADE] = seconds["fused"] + (seconds.get(STUDENT, 0.0) if _runs_student(config) else 0.0)
        for stage in config.cascade.stages[:-1]:  # a stage alone: its model's training
            seconds.setdefault(stage.name, seconds[stage.model])
    return seconds


def _view_seconds(folder) -> float:
    """A view's training on this machine: its networks' epochs, and its fold models' where it was
    trained out of fold."""
    seconds = sum(epoch["seconds"] for epoch in json.loads((folder / "history.json").read_text()))
    folds = folder / FOLDS_FILE
    return seconds + (sum(record["seconds"] for record in json.loads(folds.read_text())) if folds.is_file() else 0.0)


def _runs_student(config: Config) -> bool:
    return any(stage.model == STUDENT for stage in config.cascade.stages)
