"""Staged training over label granularities and per-part optimiser settings, on small synthetic
images whose coarse and fine classes are known."""
from __future__ import annotations

import os
import signal

import numpy as np
import torch
import pytest
from pydantic import ValidationError

from granular.config import TrainConfig
from granular.core.taxonomy import parse_taxonomy
from granular.nn import stages, train
from granular.nn.device import select_runtime
from granular.nn.inputs import Pixels
from granular.runtime.preemption import Preempted

TAXONOMY = parse_taxonomy({
    "levels": ["fine", "coarse"],
    "classes": [{"fine": "a", "coarse": "x"}, {"fine": "b", "coarse": "x"}, {"fine": "c", "coarse": "y"},
                {"fine": "d", "coarse": "y"}],
})
RUNTIME = select_runtime(1, precision="fp32")
SMALL = {"batch_size": 32, "width": 4, "seed": 3, "threads": 1, "lr": 0.05}


def _data(n=480, seed=0):
    """Images whose brightness tells the coarse class and whose left/right half the fine one."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    images = rng.random((n, 8, 8)).astype(np.float32) * 40
    images += (y[:, None, None] // 2) * 100
    images[y % 2 == 0, :, :4] += 80
    return Pixels(images[: n * 3 // 4]), y[: n * 3 // 4], Pixels(images[n * 3 // 4 :]), y[n * 3 // 4 :]


def _staged(config: TrainConfig, on_epoch=None, checkpoint_dir=None):
    x, y, x_val, y_val = _data()
    return stages.fit_staged(x, y, x_val, y_val, TAXONOMY, "fine", config, RUNTIME, on_epoch, checkpoint_dir)


def _state(network) -> dict[str, np.ndarray]:
    return {key: value.detach().clone().numpy() for key, value in network.model.state_dict().items()}


def test_relabel_maps_to_ancestors_and_refuses_a_finer_level():
    np.testing.assert_array_equal(stages.relabel(np.array([3, 0, 2, 1]), TAXONOMY, "fine", "coarse"), [1, 0, 1, 0])
    np.testing.assert_array_equal(stages.relabel(np.array([1, 0]), TAXONOMY, "coarse", "coarse"), [1, 0])
    with pytest.raises(ValueError, match="level 'fine' is not coarser than 'coarse'"):
        stages.relabel(np.array([0]), TAXONOMY, "coarse", "fine")


def test_a_stage_of_an_unknown_or_finer_level_fails_before_training():
    with pytest.raises(ValueError, match=r"train.stages\[0\].level 'medium' is not a taxonomy level"):
        stages.check_stages(TrainConfig(stages=[{"level": "medium", "epochs": 1}]), TAXONOMY, "fine")
    with pytest.raises(ValueError, match=r"train.stages\[0\].level: level 'fine' is not coarser than 'coarse'"):
        stages.check_stages(TrainConfig(stages=[{"level": "fine", "epochs": 1}]), TAXONOMY, "coarse")


def test_stages_train_in_order_on_their_own_labels_and_hand_their_features_on(monkeypatch):
    calls = []
    real_fit = train.fit

    def spy(x, y, x_val, y_val, num_classes, config, *args, initial=None, **kwargs):
        trained = real_fit(x, y, x_val, y_val, num_classes, config, *args, initial=initial, **kwargs)
        calls.append({"y": y, "classes": num_classes, "epochs": config.epochs, "initial": initial,
                      "state": _state(trained)})
        return trained

    monkeypatch.setattr(train, "fit", spy)
    records = []
    config = TrainConfig(**SMALL, epochs=2, stages=[{"level": "coarse", "epochs": 3}])
    network = _staged(config, records.append)

    assert [(r["epoch"], r["stage"], r["stage_level"]) for r in records] == [
        (1, 0, "coarse"), (2, 0, "coarse"), (3, 0, "coarse"), (4, 1, "fine"), (5, 1, "fine")
    ]
    assert config.total_epochs == 5
    coarse, fine = calls
    assert (coarse["classes"], coarse["epochs"], coarse["initial"]) == (2, 3, None)
    np.testing.assert_array_equal(coarse["y"], _data()[1] // 2)  # the coarse stage learns the coarse labels
    assert (fine["classes"], fine["epochs"]) == (4, 2)
    # The fine stage starts from every weight of the coarse stage's features, and a new head.
    handed = {key: value.numpy() for key, value in fine["initial"].items()}
    assert set(handed) == {key for key in coarse["state"] if not key.startswith("head.")}
    for key, value in handed.items():
        np.testing.assert_array_equal(value, coarse["state"][key], err_msg=key)
    assert network.model.head[-1].out_features == 4 and network.val_proba.shape[1] == 4


def test_no_stages_is_the_plain_training_bit_for_bit():
    config = TrainConfig(**SMALL, epochs=2)
    x, y, x_val, y_val = _data()
    plain = train.fit(x, y, x_val, y_val, 4, config, RUNTIME)
    staged = _staged(config)
    for key, value in _state(plain).items():
        np.testing.assert_array_equal(_state(staged)[key], value, err_msg=key)


def test_a_frozen_part_is_unchanged_and_the_other_trains():
    x, y, x_val, y_val = _data()
    start = train.fit(x, y, x_val, y_val, 4, TrainConfig(**SMALL, epochs=1), RUNTIME)
    initial = {key: value.detach().clone() for key, value in start.model.state_dict().items()}
    config = TrainConfig(**SMALL, epochs=2, parts={"features": {"frozen": True}})
    tuned = train.fit(x, y, x_val, y_val, 4, config, RUNTIME, initial=initial)
    after = _state(tuned)
    for key, value in initial.items():  # BatchNorm's running statistics included
        if key.startswith("head."):
            assert not np.array_equal(after[key], value.numpy()), key
        else:
            np.testing.assert_array_equal(after[key], value.numpy(), err_msg=key)


def test_each_part_trains_at_its_own_learning_rate_and_weight_decay():
    x, y, x_val, y_val = _data()
    start = train.fit(x, y, x_val, y_val, 4, TrainConfig(**SMALL, epochs=1), RUNTIME)
    initial = {key: value.detach().clone() for key, value in start.model.state_dict().items()}
    config = TrainConfig(**SMALL, epochs=1, parts={"head": {"lr_scale": 0.0, "weight_decay": 0.0}})
    tuned = _state(train.fit(x, y, x_val, y_val, 4, config, RUNTIME, initial=initial))
    np.testing.assert_array_equal(tuned["head.1.weight"], initial["head.1.weight"].numpy())  # rate 0: still
    assert not np.array_equal(tuned["features.0.0.weight"], initial["features.0.0.weight"].numpy())

    model = Pixels(np.zeros((1, 8, 8))).network(4, TrainConfig(**SMALL))
    optimizer = train._optimizer(model, TrainConfig(**SMALL, parts={"head": {"lr_scale": 2, "weight_decay": 0.01}}))
    (features, head) = optimizer.param_groups
    assert (features["lr"], features["weight_decay"]) == (0.05, 5e-4)
    assert (head["lr"], head["weight_decay"]) == (0.1, 0.01)
    assert head["params"] == list(model.head.parameters())


def test_every_part_frozen_is_refused():
    frozen = {"features": {"frozen": True}, "head": {"frozen": True}}
    with pytest.raises(ValidationError, match="every part of the network is frozen"):
        TrainConfig(parts=frozen)
    with pytest.raises(ValidationError, match="every part of the network is frozen"):
        TrainConfig(stages=[{"level": "coarse", "epochs": 1, "parts": frozen}])


def test_a_run_stopped_in_a_later_stage_resumes_to_the_same_weights(tmp_path):
    config = TrainConfig(**SMALL, epochs=2, stages=[{"level": "coarse", "epochs": 2}])
    expected = _state(_staged(config, checkpoint_dir=tmp_path / "uninterrupted"))

    def stop_in_the_fine_stage(record):
        if (record["stage"], record["epoch"]) == (1, 3):  # the fine stage's first epoch is done
            os.kill(os.getpid(), signal.SIGTERM)  # recorded; the loop stops at its next batch

    with pytest.raises(Preempted, match="at epoch 2, batch 1"):
        _staged(config, stop_in_the_fine_stage, tmp_path / "killed")
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == ["stage-0", "stage-1"]
    resumed = _state(_staged(config, checkpoint_dir=tmp_path / "killed"))
    for key, value in expected.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)


def test_a_stage_of_the_same_level_hands_its_head_on_too(monkeypatch):
    initials = []
    real_fit = train.fit

    def spy(*args, initial=None, **kwargs):
        initials.append(initial)
        return real_fit(*args, initial=initial, **kwargs)

    monkeypatch.setattr(train, "fit", spy)
    # A fine stage with the features frozen (the head learns first), then the whole network.
    head_first = {"level": "fine", "epochs": 1, "parts": {"features": {"frozen": True}}}
    config = TrainConfig(**SMALL, epochs=1, stages=[head_first])
    _staged(config)
    assert initials[0] is None
    assert any(key.startswith("head.") for key in initials[1])


def test_a_low_resolution_stage_trains_on_pooled_images_and_hands_every_weight_on(monkeypatch):
    calls = []
    real_fit = train.fit

    def spy(x, y, x_val, y_val, num_classes, config, *args, initial=None, **kwargs):
        trained = real_fit(x, y, x_val, y_val, num_classes, config, *args, initial=initial, **kwargs)
        calls.append({"x": x.images, "x_val": x_val.images, "initial": initial, "state": _state(trained)})
        return trained

    monkeypatch.setattr(train, "fit", spy)
    records = []
    config = TrainConfig(**SMALL, epochs=1, stages=[{"level": "fine", "epochs": 2, "resolution": 4}])
    _staged(config, records.append)

    assert [(r["stage"], r.get("stage_resolution")) for r in records] == [(0, 4), (0, 4), (1, None)]
    low, full = calls
    x, _, x_val, _ = _data()
    assert low["x"].shape[1:] == (4, 4) and low["x_val"].shape[1:] == (4, 4)
    np.testing.assert_allclose(low["x"][:, 0, 0], x.images[:, :2, :2].mean(axis=(1, 2)), rtol=1e-6)
    assert full["x"] is x.images or np.array_equal(full["x"], x.images)
    # Same level: the full-resolution stage starts from every weight, the head's included.
    assert set(full["initial"]) == set(low["state"])
    for key, value in full["initial"].items():
        np.testing.assert_array_equal(value.numpy(), low["state"][key], err_msg=key)


def test_a_resolution_stage_of_a_table_is_refused():
    from granular.nn.inputs import TableArrays

    table = TableArrays(np.zeros((4, 2), np.float32), np.zeros((4, 0), np.int64), ())
    with pytest.raises(ValueError, match=r"a stage's resolution \(7\) applies to images only"):
        stages.at_resolution(table, 7)


def test_another_networks_weights_start_the_first_stage_its_head_only_for_the_same_level():
    """A transfer: the features of another view's network (kept here by freezing them), and its
    head where it learned the same classes; a network of another level hands its features alone."""
    source = _state(_staged(TrainConfig(**SMALL, epochs=1)))
    x, y, x_val, y_val = _data()
    frozen = TrainConfig(**SMALL, epochs=1, parts={"features": {"frozen": True}})
    initial = {key: torch.from_numpy(value) for key, value in source.items()}
    same = _state(stages.fit_staged(x, y, x_val, y_val, TAXONOMY, "fine", frozen, RUNTIME, initial=initial, initial_level="fine"))
    features = [key for key in source if key.startswith("features.")]
    assert features and all(np.array_equal(same[key], source[key]) for key in features)
    assert not np.array_equal(same["head.1.weight"], source["head.1.weight"])  # trained on from the source's head

    frozen_head = TrainConfig(**SMALL, epochs=1, parts={"head": {"frozen": True}})
    fresh = _state(stages.fit_staged(x, y, x_val, y_val, TAXONOMY, "fine", frozen_head, RUNTIME))
    kept = _state(stages.fit_staged(x, y, x_val, y_val, TAXONOMY, "fine", frozen_head, RUNTIME, initial=initial, initial_level="fine"))
    other = _state(stages.fit_staged(x, y, x_val, y_val, TAXONOMY, "fine", frozen_head, RUNTIME, initial=initial, initial_level="coarse"))
    np.testing.assert_array_equal(kept["head.1.weight"], source["head.1.weight"])
    np.testing.assert_array_equal(other["head.1.weight"], fresh["head.1.weight"])  # a new head, as without a source
    assert not np.array_equal(other["head.1.weight"], source["head.1.weight"])
