"""Hyperparameter search of one view's training with Optuna: short trials on the view's own
train/validation split, bad ones pruned early, the best settings written out as a proposal."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from granular.config import Config, SearchRange, TrainConfig, TuneConfig
from granular.core.taxonomy import load_taxonomy
from granular.problems import CLASSES, problem_for
from granular.store.atomic import atomic_path
from granular.store.paths import ProjectPaths


@dataclass(frozen=True)
class TrialHooks:
    """What the caller records about each trial (MLflow runs, logs); all optional."""

    started: Callable[[int, dict], None] = lambda number, params: None
    epoch: Callable[[int, dict], None] = lambda number, record: None
    finished: Callable[[int, str, float | None], None] = lambda number, state, value: None


def _suggest(trial, space: dict[str, SearchRange | list[Any]]) -> dict[str, Any]:
    params = {}
    for key, choice in space.items():
        if isinstance(choice, list):
            params[key] = trial.suggest_categorical(key, choice)
        elif TrainConfig.model_fields[key].annotation in (int, int | None):
            params[key] = trial.suggest_int(key, math.ceil(choice.low), math.floor(choice.high), log=choice.log)
        else:
            params[key] = trial.suggest_float(key, choice.low, choice.high, log=choice.log)
    return params


def _sampler(tune: TuneConfig):
    import optuna

    if tune.sampler == "grid":
        return optuna.samplers.GridSampler({k: list(v) for k, v in tune.space.items()}, seed=tune.seed)
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=tune.seed)
    return optuna.samplers.TPESampler(seed=tune.seed)


def tune_view(config: Config, paths: ProjectPaths, view_name: str, hooks: TrialHooks = TrialHooks()) -> dict:
    """Run the search on the view's split files (written by the view step); minimise the
    validation log-loss after `tune.epochs` epochs. Return the study's summary."""
    import optuna

    from granular.nn import train
    from granular.nn.device import select_runtime
    from granular.nn.stages import handed_over, level_heads_for
    from granular.pipeline.train import source_weights, view_training_data

    tune = config.tune
    if not tune.space:
        raise ValueError("tune.space is empty: name the train settings to search in params.yaml")
    view = config.view(view_name)
    if not view.trains_networks:
        raise ValueError(f"view {view_name} learns {view.learner} trees; tune searches a network's train settings")
    if view.segments:
        raise ValueError(f"view {view_name} trains segment experts; tune its global view {view.global_name} instead")
    if problem_for(config).view_problem(config, view) is not CLASSES:  # its heads and log-loss are a classifier's
        raise ValueError(f"view {view_name} learns a regression target's value; tune searches a classifier's settings")
    base = config.train_config(view).model_copy(update={"epochs": tune.epochs})
    runtime = select_runtime(base.threads, precision=base.precision)
    initial = None
    if view.start_from:  # a transfer: each trial starts from its source's trained network
        fixed = sorted({"width", "depth"} & set(tune.space))
        if fixed:
            raise ValueError(
                f"tune.space: {', '.join(fixed)}: view {view_name} starts from view {view.start_from}'s network, "
                "whose shape is fixed; search the other settings"
            )
        source = config.view(view.start_from)
        initial = handed_over(source_weights(paths, source.name, runtime), source.level, view.level)
    taxonomy = load_taxonomy(paths.taxonomy(config.taxonomy))
    data = view_training_data(config, paths, view, taxonomy, warn=print)
    x, y = {}, {}  # the examples its network learns from (a specialist's: its classes')
    for split in ("train", "val"):
        rows = data.plan.rows(split, 0)
        x[split], y[split] = data.x[split][rows], data.y[split][rows]

    def objective(trial) -> float:
        params = _suggest(trial, tune.space)
        hooks.started(trial.number, params)

        def on_epoch(record: dict) -> None:
            hooks.epoch(trial.number, record)
            trial.report(record["val_loss"], record["epoch"])
            if tune.pruning and trial.should_prune():
                raise optuna.TrialPruned(f"validation loss {record['val_loss']:.4f} at epoch {record['epoch']}")

        trained = train.fit(
            x["train"], y["train"], x["val"], y["val"], num_classes=taxonomy.num_classes(view.level),
            config=TrainConfig.model_validate({**base.model_dump(), **params}), runtime=runtime, on_epoch=on_epoch,
            initial=initial, level_heads=level_heads_for(base, taxonomy, view.level),
        )
        return min(record["val_loss"] for record in trained.history)

    def finished(study, trial) -> None:
        hooks.finished(trial.number, trial.state.name, trial.value)

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the hooks report each trial
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=tune.pruning_startup_trials, n_warmup_steps=0)
        if tune.pruning else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(direction="minimize", sampler=_sampler(tune), pruner=pruner)
    # A trial that fails (out of memory at a large width, say) is recorded as failed; the search goes on.
    study.optimize(objective, n_trials=tune.trials, callbacks=[finished], catch=(Exception,))
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not completed:
        raise RuntimeError(f"no trial of view {view_name} completed; see the pruned and failed ones above")
    return {
        "view": view_name,
        # Where params.yaml declares it (a co-trained view is tuned as it trains alone).
        "section": "transfers" if view.start_from else "cotrained" if config.pair_of(view_name) else "views",
        "best_value": study.best_value,
        "best_params": study.best_params,
        "trials": {state: sum(t.state.name == state for t in study.trials) for state in ("COMPLETE", "PRUNED", "FAIL")},
        "metric": f"lowest validation log-loss within {tune.epochs} epochs",
    }


def write_proposal(paths: ProjectPaths, summary: dict) -> Path:
    """The best settings as a params.yaml fragment to review and merge, not applied by itself."""
    target = paths.data / "tuning" / f"{summary['view']}.yaml"
    fragment = {summary["section"]: {summary["view"]: {"train": _plain(summary["best_params"])}}}
    header = (
        f"# Proposed by `granular tune {summary['view']}`: {summary['metric']} = {summary['best_value']:.4f}\n"
        f"# ({summary['trials']['COMPLETE']} trials completed, {summary['trials']['PRUNED']} pruned).\n"
        "# Merge into params.yaml to train the view with these settings.\n"
    )
    with atomic_path(target) as tmp:
        tmp.write_text(header + yaml.safe_dump(fragment, sort_keys=True))
    return target


def _plain(params: dict) -> dict:
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}
