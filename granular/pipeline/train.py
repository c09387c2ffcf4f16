"""Step train: one view's networks (one, or an expert per segment), its model, history and
val/test probabilities (data/models/<view>/); a small table's view is also trained on folds, for
the fusion to be fitted out of fold."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from granular.config import Config
from granular.core.class_weights import class_weights
from granular.core import plots
from granular.modalities import modality_for
from granular.modalities.base import TrainingData
from granular.modalities.experts import FitNetwork, ViewModel, fit_experts, network_file, predict_routed
from granular.pipeline.out_of_fold import FoldOutputs, train_out_of_fold
from granular.pipeline.reads import (
    FOLDS_FILE,
    FOLDS_TEST,
    OUT_OF_FOLD,
    fitting_rows,
    out_of_fold,
    project_taxonomy,
    specialist_classes,
)
from granular.problems import CLASSES, VALUES, problem_for
from granular.problems.base import Problem
from granular.store.atomic import atomic_dir, write_json, write_npz
from granular.store.paths import ProjectPaths


def networks_in_view(config: Config, paths: ProjectPaths, view_name: str) -> int:
    """How many networks a view trains (its view files must be written)."""
    return modality_for(config).networks_in_view(config, paths, config.view(view_name))


def source_weights(paths: ProjectPaths, source: str, runtime) -> dict:
    """The weights of view `source`'s trained network, which a transfer starts from."""
    from granular.nn.trained import load_checkpoint

    checkpoint = paths.model_dir(source) / network_file(0)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"view {source} is to be trained first: its network {checkpoint} is not there")
    return {key: value.detach().clone() for key, value in load_checkpoint(checkpoint, runtime).model.state_dict().items()}


def view_training_data(config: Config, paths: ProjectPaths, view, classes, warn) -> TrainingData:
    """The modality's training data of a view; a specialist's networks learn (and are validated)
    on its classes' examples alone, and still answer every example."""
    data = modality_for(config).training_data(config, paths, view, classes, warn)
    if view.classes is None:
        return data
    known = specialist_classes(classes, view)
    return replace(data, plan=replace(data.plan, learnable={split: np.isin(y, known) for split, y in data.y.items()}))


def train_step(
    config: Config, paths: ProjectPaths, view_name: str, on_epoch=None, warn=print, gpu: int = 0, on_fold=None,
) -> dict:
    """Train one view (a transfer from its source view's trained network); each val/test example
    is predicted by the network it is routed to. Where the table fuses out of fold, the view is
    trained again on each fold (granular/pipeline/out_of_fold.py; `on_fold` hears of each). A
    training that was killed resumes from its last checkpoint."""
    from granular.nn.device import select_runtime  # torch is imported only by the steps that need it

    view = config.view(view_name)
    classes = project_taxonomy(config, paths)
    train_config = config.train_config(view)
    runtime = select_runtime(train_config.threads, gpu, train_config.precision)
    data = view_training_data(config, paths, view, classes, warn)
    problem = problem_for(config).view_problem(config, view)
    fitters = FITTERS[problem]
    fitter = partial(fitters.networks if view.trains_networks else fitters.trees, config, paths, view, classes, runtime, warn)
    networks, history, seconds = fit_experts(
        data.x, data.y, data.plan, fitter(paths.checkpoints(view.name)), on_epoch=on_epoch,
    )
    folds = None
    if out_of_fold(paths):
        folds = train_out_of_fold(
            data, fitting_rows(paths)["fold"], lambda f: fitter(paths.checkpoints(view.name) / f"fold-{f}"), runtime,
            on_fold=on_fold,
        )
    summary = save_view(paths, view, data, networks, history, runtime, problem, folds)
    shutil.rmtree(paths.checkpoints(view.name), ignore_errors=True)  # the model is saved: not needed
    return {**summary, "train_seconds": seconds + sum(record["seconds"] for record in summary.get("folds", []))}


def _network_fitter(config: Config, paths: ProjectPaths, view, classes, runtime, warn, checkpoints: Path) -> FitNetwork:
    """Network k of the view trains with seed train.seed + k, through its stages, from the
    source view's network for a transfer; killed, it resumes from its checkpoint."""
    from granular.nn import stages

    train_config = config.train_config(view)
    initial = source_weights(paths, view.start_from, runtime) if view.start_from else None
    initial_level = config.view(view.start_from).level if view.start_from else None

    def fit(number: int, tag: dict, x_train, y_train, x_val, y_val, record_epoch) -> object:
        network_config = train_config.model_copy(update={"seed": train_config.seed + number})
        network = stages.fit_staged(
            x_train, y_train, x_val, y_val, classes, view.level, network_config, runtime,
            on_epoch=record_epoch, checkpoint_dir=checkpoints / f"network-{number}", warn=warn,
            initial=initial, initial_level=initial_level,
        )
        network.meta = {
            "view": view.model_dump(), "train_config": network_config.model_dump(),
            "class_names": list(classes.names[view.level]), **tag,
        }
        return network

    return fit


def _trees_fitter(config: Config, paths: ProjectPaths, view, classes, runtime, warn, checkpoints: Path) -> FitNetwork:
    """Trees k of the view (`learner: hgb`) fit with seed train.seed + k, early stopping on
    the validation rows routed to them; one record each, as one epoch."""
    from granular.modalities.tables.trees import fit_trees

    seed, threads = config.train_config(view).seed, config.train.threads

    def fit(number: int, tag: dict, x_train, y_train, x_val, y_val, record_epoch) -> object:
        trees = fit_trees(
            x_train, y_train, x_val, y_val, classes.num_classes(view.level), config.trees, seed=seed + number,
            threads=threads, class_weights=class_weights(config.trees.class_weight, y_train, classes, view.level),
        )
        record_epoch(trees.record(x_train, y_train, x_val, y_val))
        return trees

    return fit


def _value_network_fitter(config: Config, paths: ProjectPaths, view, classes, runtime, warn, checkpoints: Path) -> FitNetwork:
    """Network k of a view of a regression target's value: one stage, the squared error of the
    standardised value, seed train.seed + k; killed, it resumes from its checkpoint."""
    from granular.nn import train
    from granular.nn.objective import Values

    train_config = config.train_config(view)

    def fit(number: int, tag: dict, x_train, y_train, x_val, y_val, record_epoch) -> object:
        network_config = train_config.model_copy(update={"seed": train_config.seed + number})
        network = train.fit(
            x_train, y_train, x_val, y_val, 1, network_config, runtime, on_epoch=record_epoch,
            checkpoint_dir=checkpoints / f"network-{number}", warn=warn, objective=Values(),
        )
        network.meta = {"view": view.model_dump(), "train_config": network_config.model_dump(),
                        "target": config.data.table.target, **tag}
        return network

    return fit


def _value_trees_fitter(config: Config, paths: ProjectPaths, view, classes, runtime, warn, checkpoints: Path) -> FitNetwork:
    """Regression trees k of a view of the target's value, as `_trees_fitter`."""
    from granular.modalities.tables.trees import fit_regression_trees

    seed, threads = config.train_config(view).seed, config.train.threads

    def fit(number: int, tag: dict, x_train, y_train, x_val, y_val, record_epoch) -> object:
        trees = fit_regression_trees(x_train, y_train, x_val, y_val, config.trees, seed=seed + number, threads=threads)
        record_epoch(trees.record(x_train, y_train, x_val, y_val))
        return trees

    return fit


@dataclass(frozen=True)
class ViewFitters:
    """How a view of one problem fits each of its networks, or its trees (`learner: hgb`); each
    takes (config, paths, view, classes, runtime, warn, checkpoints) and uses what it needs
    (`checkpoints`: the folder a killed training resumes from)."""

    networks: Callable[..., FitNetwork]
    trees: Callable[..., FitNetwork]


# A view's fitters, by the problem it solves (a regression's binned view learns classes).
FITTERS = {
    CLASSES: ViewFitters(networks=_network_fitter, trees=_trees_fitter),
    VALUES: ViewFitters(networks=_value_network_fitter, trees=_value_trees_fitter),
}


def save_view(
    paths: ProjectPaths, view, data: TrainingData, networks: list, history: list[dict], runtime,
    problem: Problem = CLASSES, folds: FoldOutputs | None = None,
) -> dict:
    """Write a trained view's model, its val/test outputs (class probabilities, or a view of a
    value's values, (N, 1); each example predicted by the network it is routed to), history and
    learning curves, and its fold models' outputs (and records, FOLDS_FILE) where it was trained
    out of fold; return what its training summary says, its validation score as its `problem`
    scores it."""
    outputs = {s: predict_routed(networks, data.plan.route[s], data.x[s], runtime) for s in ("val", "test")}
    score, score_label = problem.epoch_score
    out_of_fold = {} if folds is None else {OUT_OF_FOLD: folds.fitting, FOLDS_TEST: folds.test}
    with atomic_dir(paths.model_dir(view.name)) as staging:
        ViewModel(level=view.level, reader=data.reader, networks=networks).save(staging)
        write_npz(staging / "predictions.npz", val_proba=outputs["val"], test_proba=outputs["test"], **out_of_fold)
        write_json(staging / "history.json", history)
        if folds is not None:
            write_json(staging / FOLDS_FILE, folds.records)
        plots.save_learning_curves_png(staging / "learning_curves.png", history, view.name, score, score_label)
    return {
        "view": view.name,
        "device": runtime.name,
        "history": history,
        **({} if folds is None else {"folds": folds.records}),
        **problem.validation_score(outputs["val"], data.y["val"]),
    }
