"""Training one view: tiny data, seeded determinism, and checkpoints that rebuild the model."""
import numpy as np

from granular.config import TrainConfig
from granular.device import select_runtime
from granular.train import fit, load_checkpoint, predict_proba, save_checkpoint

RUNTIME = select_runtime(threads=1)
CONFIG = TrainConfig(epochs=2, batch_size=16, width=4, seed=3)


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = (rng.random((n, 8, 8)) * 60 + y[:, None, None] * 80).astype(np.float32)
    return x, y


def test_a_run_shorter_than_the_schedule_warm_up_still_trains():
    x, y = _data(3)  # one step per epoch: a small segment's expert; 4 steps in all
    config = CONFIG.model_copy(update={"epochs": 4})
    trained = fit(x, y, x, y, num_classes=3, config=config, runtime=RUNTIME)
    assert [h["epoch"] for h in trained.history] == [1, 2, 3, 4]
    assert trained.val_proba.shape == (3, 3)


def test_the_same_seed_trains_the_same_model():
    x, y = _data(64)
    first = fit(x, y, x, y, num_classes=3, config=CONFIG, runtime=RUNTIME)
    second = fit(x, y, x, y, num_classes=3, config=CONFIG, runtime=RUNTIME)
    np.testing.assert_array_equal(first.val_proba, second.val_proba)


def test_a_checkpoint_rebuilds_the_same_predictions(tmp_path):
    x, y = _data(64)
    trained = fit(x, y, x, y, num_classes=3, config=CONFIG, runtime=RUNTIME)
    trained.meta = {"view": {"level": "fine"}}
    save_checkpoint(tmp_path / "model.pt", trained)
    loaded = load_checkpoint(tmp_path / "model.pt", RUNTIME)
    assert loaded.meta == trained.meta
    np.testing.assert_allclose(predict_proba(loaded, x, RUNTIME), predict_proba(trained, x, RUNTIME), rtol=1e-6)
