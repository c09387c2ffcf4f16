"""A killed training resumes from its checkpoint and ends exactly where an uninterrupted one ends."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from granular.config import TrainConfig
from granular.nn import checkpoints
from granular.nn.device import select_runtime

REPO = Path(__file__).resolve().parents[1]
CONFIG = TrainConfig(epochs=3, batch_size=16, width=4, seed=11, threads=1)

# Trains on synthetic data, checkpointing into argv[1], then saves the final weights to argv[2].
TRAINING = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    from granular.config import TrainConfig
    from granular.nn.device import select_runtime
    from granular.nn.inputs import Pixels
    from granular.nn.train import fit

    rng = np.random.default_rng(0)
    y = np.arange(3000) % 3
    x = Pixels((rng.random((3000, 8, 8)) * 60 + y[:, None, None] * 80).astype(np.float32))
    config = TrainConfig.model_validate_json(sys.argv[3])
    trained = fit(x, y, x[:300], y[:300], num_classes=3, config=config, runtime=select_runtime(1, precision="fp32"),
                  checkpoint_dir=sys.argv[1], on_epoch=lambda r: print("epoch", r["epoch"], flush=True))
    np.savez(sys.argv[2], val_proba=trained.val_proba,
             **{k: v.numpy() for k, v in trained.model.state_dict().items()})
""")


def _start(checkpoint_dir: Path, result: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", TRAINING, str(checkpoint_dir), str(result), CONFIG.model_dump_json()],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(checkpoint_dir: Path, result: Path) -> str:
    done = _start(checkpoint_dir, result)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    return out + err


def _wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("uninterrupted")
    _finish(folder / "checkpoints", folder / "result.npz")
    return dict(np.load(folder / "result.npz"))


def _assert_same_result(result: Path, expected: dict) -> None:
    found = dict(np.load(result))
    assert found.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(found[key], expected[key], err_msg=key)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path, uninterrupted):
    checkpoint_dir = tmp_path / "checkpoints"
    killed = _start(checkpoint_dir, tmp_path / "unused.npz")
    _wait_for(lambda: checkpoints.checkpoint_path(checkpoint_dir, 2, 0).exists())  # epoch 1 is done
    time.sleep(0.3)  # into epoch 2
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL

    log = _finish(checkpoint_dir, tmp_path / "result.npz")
    assert re.search(r"resuming from checkpoint at epoch [23], batch 0 ", log)
    _assert_same_result(tmp_path / "result.npz", uninterrupted)


@pytest.mark.parametrize("sig, error", [
    (signal.SIGTERM, "Preempted: stopped on SIGTERM at epoch"),
    (signal.SIGINT, "Interrupted: interrupted (SIGINT) at epoch"),
])
@pytest.mark.slow
def test_a_stop_signal_saves_a_checkpoint_mid_epoch_and_the_rerun_continues_from_it(tmp_path, uninterrupted, sig, error):
    checkpoint_dir = tmp_path / "checkpoints"
    stopped = _start(checkpoint_dir, tmp_path / "unused.npz")
    _wait_for(lambda: checkpoints.checkpoint_path(checkpoint_dir, 2, 0).exists())
    time.sleep(0.3)
    stopped.send_signal(sig)
    _, err = stopped.communicate(timeout=60)
    assert stopped.returncode != 0
    assert error in err
    mid_epoch = [p for p in checkpoint_dir.glob("epoch-*.pt") if not p.name.endswith("step-0000000.pt")]
    assert mid_epoch, f"no checkpoint written on {sig.name}"

    log = _finish(checkpoint_dir, tmp_path / "result.npz")
    assert re.search(r"resuming from checkpoint at epoch \d, batch [1-9]\d* ", log)  # mid-epoch
    _assert_same_result(tmp_path / "result.npz", uninterrupted)


def _tiny_data():
    from granular.nn.inputs import Pixels

    y = np.arange(96) % 3
    return Pixels((np.random.default_rng(0).random((96, 8, 8)) * 60 + y[:, None, None] * 80).astype(np.float32)), y


def test_ctrl_c_while_an_epoch_is_being_logged_lets_the_logging_finish_then_stops_at_the_next_batch(tmp_path):
    # A KeyboardInterrupt inside an MLflow write leaves its SQLite transaction open (the store is
    # then locked for the rest of the process): the callback must run to its end.
    from granular.nn.train import fit
    from granular.runtime.preemption import Interrupted

    x, y = _tiny_data()
    logged = []

    def on_epoch(record):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of logging the epoch
        logged.append(record["epoch"])

    with pytest.raises(Interrupted, match=r"at epoch 2, batch 1; checkpoint: .*epoch-0002-step-0000001\.pt"):
        fit(x, y, x[:30], y[:30], num_classes=3, config=CONFIG, runtime=select_runtime(1, precision="fp32"),
            checkpoint_dir=tmp_path / "checkpoints", on_epoch=on_epoch)
    assert logged == [1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back as it was


def test_a_stop_signal_after_the_last_batch_is_not_lost():
    from granular.nn.train import fit

    x, y = _tiny_data()
    with pytest.raises(KeyboardInterrupt):  # delivered as the training ends, to the handler before
        fit(x, y, x[:30], y[:30], num_classes=3, config=CONFIG.model_copy(update={"epochs": 1}),
            runtime=select_runtime(1, precision="fp32"), on_epoch=lambda record: signal.raise_signal(signal.SIGINT))


def test_a_truncated_checkpoint_is_skipped_for_the_one_before(tmp_path):
    import torch

    folder = tmp_path / "checkpoints"
    checkpoints.save_state(folder, 2, 0, {"fingerprint": "f", "weights": torch.ones(3)})
    newest = checkpoints.save_state(folder, 3, 0, {"fingerprint": "f", "weights": torch.zeros(3)})
    newest.write_bytes(newest.read_bytes()[:50])
    warnings = []
    state = checkpoints.load_latest(folder, "f", torch.device("cpu"), warnings.append)
    assert state["epoch"] == 2 and state["weights"].tolist() == [1.0, 1.0, 1.0]
    assert "cannot be read" in warnings[0] and newest.name in warnings[0]


def test_a_checkpoint_of_another_training_is_not_resumed(tmp_path):
    import torch

    folder = tmp_path / "checkpoints"
    checkpoints.save_state(folder, 2, 0, {"fingerprint": "other"})
    warnings = []
    assert checkpoints.load_latest(folder, "mine", torch.device("cpu"), warnings.append) is None
    assert "belongs to another training" in warnings[0]


def test_only_the_newest_two_checkpoints_are_kept(tmp_path):
    for epoch in range(1, 5):
        checkpoints.save_state(tmp_path, epoch, 0, {"fingerprint": "f"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0003-step-0000000.pt", "epoch-0004-step-0000000.pt"]
