"""The training loop's hook points and the objectives' checks, on tiny synthetic data."""
from __future__ import annotations

import os
import signal
from contextlib import contextmanager

import numpy as np
import pytest

from granular.config import TrainConfig
from granular.nn import hooks, loop, predict, train
from granular.nn.device import select_runtime
from granular.nn.inputs import Pixels, TableArrays
from granular.nn.objective import Classes, Values
from granular.runtime import preemption

RUNTIME = select_runtime(1, precision="fp32")
CONFIG = TrainConfig(epochs=2, batch_size=32, width=4, seed=1, threads=1, lr=0.05, dropout=0.1, tta_shift=0)


def _images(n=96):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = (rng.random((n, 8, 8)) * 60 + y[:, None, None] * 80).astype(np.float32)
    cut = n * 2 // 3
    return loop.TrainingData(Pixels(x[:cut]), y[:cut], Pixels(x[cut:]), y[cut:])


class Recorder(hooks.Hook):
    def __init__(self):
        self.points = []

    @contextmanager
    def _running(self):
        self.points.append("running")
        yield
        self.points.append("done running")

    def running(self):
        return self._running()

    def on_start(self, run):
        self.points.append("start")

    def on_epoch_start(self, run):
        self.points.append(f"epoch {run.epoch}")

    def after_step(self, run):
        self.points.append(f"step {run.step}")

    def after_turn(self, run):
        self.points.append("turn")

    def on_validation_end(self, run, record, val_out):
        self.points.append(f"validated {sorted(record)}")

    def on_epoch_end(self, run, record):
        self.points.append(f"end of epoch {run.epoch}, {len(run.trained.history)} in the history")

    def on_end(self, run):
        self.points.append("end")


def test_the_loop_calls_each_hook_point_in_order_and_pauses_after_every_step():
    data, recorder = _images(), Recorder()
    run = train.start(data, loop.Recipe(CONFIG, RUNTIME, 2), Classes())
    steps = loop.training_steps(run, hooks.Hooks(recorder))
    pauses = 0
    with pytest.raises(StopIteration) as end:
        while True:
            next(steps)
            pauses += 1
    assert end.value.value is run.trained and pauses == 2 * 2  # 64 examples, batches of 32, 2 epochs
    epoch = ["step 1", "turn", "step 2", "turn", "validated ['epoch', 'train_loss', 'val_accuracy', 'val_loss']"]
    assert recorder.points == [
        "start", "running",
        "epoch 1", *epoch, "end of epoch 1, 1 in the history",
        "epoch 2", *epoch, "end of epoch 2, 2 in the history",
        "done running", "end",
    ]


def test_an_epoch_resumed_after_its_last_step_validates_without_steps(tmp_path):
    """Preempted after an epoch's last batch, the training resumes straight into its validation."""
    data = _images()

    def stop_after_a_whole_epoch(run):
        if run.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # recorded; the loop stops before its next batch

    stopper = hooks.Hook()
    stopper.after_step = stop_after_a_whole_epoch
    checkpoint = hooks.Checkpoint(tmp_path, warn=lambda line: None)
    first = train.start(data, loop.Recipe(CONFIG, RUNTIME, 2), Classes())
    with pytest.raises(preemption.Preempted, match="at epoch 1, batch 2"):
        loop.run_to_end(loop.training_steps(first, hooks.Hooks(
            checkpoint, stopper, hooks.Preemption(checkpoint, defer_signals=True),
        )))
    records = []
    resumed = train.fit(data.x_train, data.y_train, data.x_val, data.y_val, 2, CONFIG, RUNTIME,
                        on_epoch=records.append, checkpoint_dir=tmp_path, warn=lambda line: None)
    whole = train.fit(data.x_train, data.y_train, data.x_val, data.y_val, 2, CONFIG, RUNTIME)
    assert [r["epoch"] for r in records] == [1, 2] and records[0]["images_per_s"] == 0.0
    np.testing.assert_array_equal(resumed.val_proba, whole.val_proba)


def test_a_value_objective_learns_one_number_per_example_without_extra_heads():
    numeric = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
    table = TableArrays(numeric, np.zeros((40, 0), dtype=np.int64), ())
    data = loop.TrainingData(table[:30], numeric[:30, 0] * 10, table[30:], numeric[30:, 0] * 10)
    for num_classes, y, message in [(2, data.y_train, "one output"), (1, np.full(30, np.nan), "finite numbers")]:
        with pytest.raises(ValueError, match=message):
            train.start(loop.TrainingData(data.x_train, y, data.x_val, data.y_val),
                        loop.Recipe(CONFIG, RUNTIME, num_classes), Values())
    trained = train.fit(data.x_train, data.y_train, data.x_val, data.y_val, 1, CONFIG, RUNTIME, objective=Values())
    assert trained.target_scale == pytest.approx((data.y_train.mean(), data.y_train.std()))
    assert list(trained.history[-1])[:4] == ["epoch", "train_loss", "val_rmse", "val_loss"]
    assert predict.predict_proba(trained, data.x_val, RUNTIME).shape == (10, 1)


def test_class_weights_need_one_weight_per_class_and_targets_one_per_input():
    data = _images()
    with pytest.raises(ValueError, match=r"one weight per class \(2\) is needed, got shape \(3,\)"):
        train.start(data, loop.Recipe(CONFIG, RUNTIME, 2), Classes(np.ones(3)))
    with pytest.raises(ValueError, match="64 training inputs but 10 targets"):
        train.start(loop.TrainingData(data.x_train, data.y_train[:10], data.x_val, data.y_val),
                    loop.Recipe(CONFIG, RUNTIME, 2), Classes())
