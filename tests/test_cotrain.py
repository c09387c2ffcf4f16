"""Co-training of a low- and a high-resolution network on small synthetic images."""
from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from granular.config import TrainConfig
from granular.nn import cotrain, hooks, loop, train
from granular.nn.device import select_runtime
from granular.nn.inputs import Pixels
from granular.nn.objective import Classes

RUNTIME = select_runtime(1, precision="fp32")
CONFIG = TrainConfig(epochs=2, batch_size=32, width=4, seed=5, threads=1, lr=0.05, dropout=0.3)


def _members(n=400, seed=0) -> list[cotrain.Member]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    full = (rng.random((n, 8, 8)) * 60 + y[:, None, None] * 60).astype(np.float32)
    low = full.reshape(n, 4, 2, 4, 2).mean(axis=(2, 4))  # the same images pooled to 4x4
    cut = n * 3 // 4
    return [
        cotrain.Member(Pixels(x[:cut]), y[:cut], Pixels(x[cut:]), y[cut:], 3, CONFIG.model_copy(update={"seed": s}))
        for x, s in ((full, 5), (low, 9))
    ]


def _alone(member: cotrain.Member):
    return train.fit(member.x_train, member.y_train, member.x_val, member.y_val, member.num_classes, member.config,
                     RUNTIME)


def _weights(trained) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in trained.model.state_dict().items()}


def test_weight_zero_is_each_network_trained_alone_bit_for_bit():
    members = _members()
    together = cotrain.fit_together(members, weight=0.0, runtime=RUNTIME)
    for member, trained in zip(members, together):
        alone = _weights(_alone(member))
        for key, value in _weights(trained).items():
            np.testing.assert_array_equal(value, alone[key], err_msg=key)
        np.testing.assert_array_equal(trained.val_proba, _alone(member).val_proba)


def _disagreement(a: np.ndarray, b: np.ndarray) -> float:
    """Mean symmetric KL divergence between two networks' validation probabilities."""
    a, b = np.clip(a, 1e-9, 1), np.clip(b, 1e-9, 1)
    return float(np.mean(np.sum(a * np.log(a / b) + b * np.log(b / a), axis=1)))


def test_a_consistency_weight_pulls_the_networks_predictions_together():
    members = _members()
    independent = [_alone(member) for member in members]
    pulled = cotrain.fit_together(members, weight=3.0, runtime=RUNTIME)
    before = _disagreement(independent[0].val_proba, independent[1].val_proba)
    after = _disagreement(pulled[0].val_proba, pulled[1].val_proba)
    assert after < before / 2, (before, after)


def test_each_network_records_its_own_epochs():
    records = [[], []]
    members = _members()
    for member, kept in zip(members, records):
        member.on_epoch = kept.append
    cotrain.fit_together(members, weight=1.0, runtime=RUNTIME)
    assert [[r["epoch"] for r in kept] for kept in records] == [[1, 2], [1, 2]]


def test_an_epochs_seconds_are_its_own_steps_not_its_partners_turns():
    member = _members()[0]
    records = []
    run = train.start(loop.TrainingData(member.x_train, member.y_train, member.x_val, member.y_val),
                      loop.Recipe(member.config.model_copy(update={"epochs": 1}), RUNTIME, member.num_classes), Classes())
    steps = loop.training_steps(run, hooks.Hooks(hooks.Progress(records.append)))
    pause = 0.2  # a partner's turn after each of the epoch's 10 steps: 2 s in all
    try:
        while True:
            next(steps)
            time.sleep(pause)
    except StopIteration:
        pass
    assert len(records) == 1 and records[0]["seconds"] < 10 * pause / 2, records


def test_networks_of_different_examples_or_a_negative_weight_are_refused():
    members = _members()
    members[1] = cotrain.Member(members[1].x_train[:10], members[1].y_train[:10], members[1].x_val, members[1].y_val,
                                3, CONFIG)
    with pytest.raises(ValueError, match=r"must read the same training examples; their counts are \[10, 300\]"):
        cotrain.fit_together(members, weight=1.0, runtime=RUNTIME)
    with pytest.raises(ValueError, match="consistency weight must be 0 or more"):
        cotrain.fit_together(_members(), weight=-1.0, runtime=RUNTIME)
    with pytest.raises(ValueError, match="needs two networks or more"):
        cotrain.fit_together(_members()[:1], weight=1.0, runtime=RUNTIME)


def test_the_stop_signals_are_handed_back_after_co_training():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    cotrain.fit_together(_members(n=120), weight=1.0, runtime=RUNTIME)
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_pair_of_params_yaml_at_weight_zero_saves_each_view_as_its_training_alone(tmp_path):
    """The pipeline's cotrain step (a `cotrain` pair of `cotrained` views) on the real data,
    subsampled: at weight 0 each view's saved network is bit for bit the train step's."""
    import shutil
    from pathlib import Path

    import torch

    from granular.config import load_config
    from granular.pipeline.clean import clean_step
    from granular.pipeline.cotrain import cotrain_step
    from granular.pipeline.import_raw import import_raw_step
    from granular.pipeline.split import split_step
    from granular.pipeline.train import train_step
    from granular.pipeline.validate import validate_step
    from granular.pipeline.view import view_step
    from granular.store.paths import ProjectPaths

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "data").mkdir()
    shutil.copy(repo / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(repo / "data" / "taxonomy.yaml", tmp_path / "data" / "taxonomy.yaml")
    paths = ProjectPaths(tmp_path)
    small = ["data.limit=300", "validate.min_per_class=10", "train.width=8", "train.threads=1"]
    views = "{fine-7: {level: fine, resolution: 7, train: {epochs: 1}}, fine-4: {level: fine, resolution: 4, train: {epochs: 1}}}"
    paired = load_config(paths.params, small + [f"cotrained={views}", "cotrain={mutual: {first: fine-7, second: fine-4, weight: 0}}"])
    alone = load_config(paths.params, small + [f"views={views}"])
    for step in (import_raw_step, clean_step, validate_step, split_step):
        step(paired, paths)
    epochs = []
    for name in ("fine-7", "fine-4"):
        view_step(paired, paths, name)
    summary = cotrain_step(paired, paths, "mutual", on_epoch=epochs.append, warn=lambda _: None)
    assert set(summary["views"]) == {"fine-7", "fine-4"} and {e["view"] for e in epochs} == {"fine-7", "fine-4"}

    def saved(name):
        return torch.load(paths.model_dir(name) / "network-0.pt", weights_only=True)["state_dict"]

    together = {name: saved(name) for name in ("fine-7", "fine-4")}
    for name in ("fine-7", "fine-4"):
        train_step(alone, paths, name, warn=lambda _: None)
        assert all(torch.equal(together[name][key], value) for key, value in saved(name).items()), name
