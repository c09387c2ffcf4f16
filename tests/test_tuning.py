"""Hyperparameter search: the search space in params.yaml, trials, pruning and the proposal."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from granular.config import ConfigError, load_config
from granular.pipeline.clean import clean_step
from granular.pipeline.import_raw import import_raw_step
from granular.pipeline.split import split_step
from granular.pipeline.tuning import TrialHooks, tune_view, write_proposal
from granular.pipeline.validate import validate_step
from granular.pipeline.view import view_step
from granular.store.paths import ProjectPaths
from small_project import EVERY_KIND

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
SMALL = [EVERY_KIND, "data.limit=300", "validate.min_per_class=10", "train.width=8", "tune.epochs=2"]


def test_the_grid_sampler_refuses_ranges():
    with pytest.raises(ConfigError, match=r"the grid sampler needs lists of choices; \['label_smoothing', 'lr', 'weight_decay'\]"):
        load_config(PARAMS, ["tune.sampler=grid"])


def test_only_train_settings_can_be_tuned():
    with pytest.raises(ConfigError, match=r"\['epochs', 'momentum'\] cannot be tuned"):
        load_config(PARAMS, ["tune.space={epochs: [1, 2], momentum: [0.8, 0.9]}"])


def test_a_log_range_needs_a_positive_low():
    with pytest.raises(ConfigError, match="a log range needs low > 0"):
        load_config(PARAMS, ["tune.space={lr: {low: 0, high: 0.1, log: true}}"])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> ProjectPaths:
    """A project with the fine-14 view's split files built from the real data, subsampled."""
    root = tmp_path_factory.mktemp("tune")
    shutil.copy(PARAMS, root / "params.yaml")
    (root / "data").mkdir()
    shutil.copy(REPO / "data" / "taxonomy.yaml", root / "data" / "taxonomy.yaml")
    paths = ProjectPaths(root)
    config = load_config(paths.params, SMALL)
    for step in (import_raw_step, clean_step, validate_step, split_step):
        step(config, paths)
    view_step(config, paths, "fine-14")
    return paths


def test_random_search_runs_every_trial_in_the_space_and_proposes_the_best(project: ProjectPaths):
    config = load_config(project.params, SMALL + ["tune.sampler=random", "tune.trials=3", "tune.pruning=false"])
    seen = []
    summary = tune_view(config, project, "fine-14", TrialHooks(started=lambda n, params: seen.append(params)))
    assert summary["trials"] == {"COMPLETE": 3, "PRUNED": 0, "FAIL": 0}
    for params in seen:
        assert 0.01 <= params["lr"] <= 0.2 and params["width"] in (24, 32, 48)
    assert summary["best_params"] in seen

    proposal = yaml.safe_load(write_proposal(project, summary).read_text())
    assert proposal == {"views": {"fine-14": {"train": summary["best_params"]}}}
    merged = load_config(project.params, [EVERY_KIND, f"views.fine-14.train={summary['best_params']}"])  # it applies as is
    assert merged.train_config(merged.view("fine-14")).lr == summary["best_params"]["lr"]


def test_a_trial_worse_than_the_median_at_an_epoch_is_pruned(project: ProjectPaths):
    config = load_config(project.params, SMALL + [
        "tune.sampler=grid", "tune.trials=3", "tune.pruning_startup_trials=1", "tune.epochs=4", "train.batch_size=32",
        "tune.space={lr: [0.05, 0.04, 1.0e-7]}", "tune.seed=5",  # a grid order that tries 1e-7 last
    ])
    order, states = [], {}
    hooks = TrialHooks(started=lambda n, params: order.append(params["lr"]), finished=lambda n, state, value: states.update({n: state}))
    summary = tune_view(config, project, "fine-14", hooks)
    hopeless = order.index(1.0e-7)  # a learning rate that cannot learn in four epochs
    assert hopeless == 2 and states[hopeless] == "PRUNED"
    assert states[0] == "COMPLETE"  # the first trial sets the median, it is never pruned
    assert summary["best_params"]["lr"] in (0.05, 0.04)


def test_a_transfer_is_tuned_from_its_sources_network_and_proposed_under_transfers(
    project: ProjectPaths, monkeypatch: pytest.MonkeyPatch
):
    import torch

    from granular.nn import train
    from granular.pipeline.train import train_step

    transfer = "transfers={coarse-14: {start_from: fine-14, level: coarse, resolution: 14}}"
    config = load_config(project.params, SMALL + [transfer, "train.epochs=1", "tune.trials=1", "tune.pruning=false"])
    with pytest.raises(ValueError, match=r"tune.space: width: view coarse-14 starts from view fine-14's network"):
        tune_view(config, project, "coarse-14")

    train_step(config, project, "fine-14", warn=lambda _: None)
    view_step(config, project, "coarse-14")
    source = torch.load(project.model_dir("fine-14") / "network-0.pt", weights_only=True)["state_dict"]
    starts = []
    real_fit = train.fit
    monkeypatch.setattr(train, "fit", lambda *args, initial=None, **kwargs: starts.append(initial) or real_fit(
        *args, initial=initial, **kwargs))
    config = load_config(project.params, SMALL + [transfer, "tune.trials=1", "tune.pruning=false", "tune.space={lr: [0.05]}"])
    summary = tune_view(config, project, "coarse-14")
    (initial,) = starts
    assert set(initial) == {key for key in source if not key.startswith("head.")}  # a coarse head starts afresh
    assert all((initial[key] == source[key]).all() for key in initial)
    assert yaml.safe_load(write_proposal(project, summary).read_text()) == {"transfers": {"coarse-14": {"train": {"lr": 0.05}}}}


def test_a_specialist_is_tuned_on_its_classes_examples_alone(project: ProjectPaths, monkeypatch: pytest.MonkeyPatch):
    from granular.nn import train

    specialist = "views.fine-14-tops={level: fine, resolution: 14, classes: [tops]}"
    config = load_config(project.params, SMALL + [specialist, "tune.trials=1", "tune.epochs=1", "tune.pruning=false"])
    view_step(config, project, "fine-14-tops")
    learned = []
    fit = train.fit

    def recording_fit(x_train, y_train, x_val, y_val, **kwargs):
        learned.append((set(np.unique(y_train).tolist()), set(np.unique(y_val).tolist())))
        return fit(x_train, y_train, x_val, y_val, **kwargs)

    monkeypatch.setattr(train, "fit", recording_fit)
    tune_view(config, project, "fine-14-tops")
    assert learned == [({0, 2, 4, 6}, {0, 2, 4, 6})]  # T-shirt/top, Pullover, Coat, Shirt
