"""Training one view: the recipe's options, tiny data, seeded determinism, and checkpoints that
rebuild the model."""
import numpy as np
import pytest
import torch

from granular.config import TrainConfig
from granular.core.evaluate import log_loss
from granular.nn.device import select_runtime
from granular.nn.inputs import Pixels, _erase, _test_time_copies
from granular.nn.predict import predict_proba
from granular.nn.train import fit
from granular.nn.trained import load_checkpoint, save_checkpoint

RUNTIME = select_runtime(threads=1, precision="fp32")  # the same numbers on every CPU
CONFIG = TrainConfig(epochs=2, batch_size=16, width=4, seed=3, lr=0.01, dropout=0.1, tta_shift=0)


def _data(n: int, seed: int = 0) -> tuple[Pixels, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = (rng.random((n, 8, 8)) * 60 + y[:, None, None] * 80).astype(np.float32)
    return Pixels(x), y


def _parameters(trained) -> int:
    return sum(p.numel() for p in trained.model.parameters())


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
    trained.tta = False
    save_checkpoint(tmp_path / "model.pt", trained)
    loaded = load_checkpoint(tmp_path / "model.pt", RUNTIME)
    assert loaded.meta == trained.meta and loaded.tta is False
    np.testing.assert_allclose(predict_proba(loaded, x, RUNTIME), predict_proba(trained, x, RUNTIME), rtol=1e-6)


def test_shifted_test_time_views_are_translations_and_their_mean_is_what_the_model_predicts(tmp_path):
    images = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4) + 1
    plain, up_left, down_right, *mirrored = _test_time_copies(images, mirror=True, shift=1)
    assert torch.equal(up_left[..., 1:, 1:], images[..., :3, :3]) and (up_left[..., 0, :] == 0).all()
    assert torch.equal(down_right[..., :3, :3], images[..., 1:, 1:]) and (down_right[..., 3, :] == 0).all()
    assert [torch.equal(m, v.flip(-1)) for m, v in zip(mirrored, (plain, up_left, down_right))] == [True] * 3
    assert len(_test_time_copies(images, mirror=False, shift=0)) == 1

    x, y = _data(64)
    trained = fit(x, y, x, y, num_classes=3, config=CONFIG.model_copy(update={"tta_shift": 1}), runtime=RUNTIME)
    assert trained.tta and trained.tta_shift == 1
    views = _test_time_copies(torch.as_tensor(x.images[:, None]), True, 1)  # shifted in pixels: black fills in
    with torch.no_grad():
        model = trained.model.eval()
        expected = torch.stack([model((v - trained.mean) / trained.std).softmax(1) for v in views]).mean(0)
    np.testing.assert_allclose(predict_proba(trained, x, RUNTIME), expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trained.val_proba, expected.numpy(), rtol=1e-5, atol=1e-6)  # the epochs' checks had none
    save_checkpoint(tmp_path / "model.pt", trained)
    assert load_checkpoint(tmp_path / "model.pt", RUNTIME).tta_shift == 1


def test_adamw_with_a_cosine_schedule_warms_up_to_the_peak_then_decays():
    x, y = _data(64)
    config = CONFIG.model_copy(update={"optimizer": "adamw", "schedule": "cosine", "lr": 0.01, "epochs": 4})
    trained = fit(x, y, x, y, num_classes=3, config=config, runtime=RUNTIME)
    lrs = [h["lr"] for h in trained.history]  # after each epoch of 4 steps; warm-up is the first 4
    assert lrs[0] == pytest.approx(0.01, rel=0.05)
    assert lrs[1] > lrs[2] > lrs[3] >= 0


def test_early_stopping_stops_and_keeps_the_best_weights():
    x, y = _data(96)
    wrong = (y + 1) % 3  # validation labels the training signal moves away from
    config = CONFIG.model_copy(update={"epochs": 8, "early_stopping_patience": 2, "lr": 0.05})
    trained = fit(x, y, x, wrong, num_classes=3, config=config, runtime=RUNTIME, warn=lambda m: None)
    losses = [h["val_loss"] for h in trained.history]
    best_epoch = 1 + int(np.argmin(losses))
    assert len(losses) == best_epoch + 2 < 8  # stopped two epochs after the best one
    assert log_loss(trained.val_proba, wrong) == pytest.approx(min(losses))
    np.testing.assert_allclose(predict_proba(trained, x, RUNTIME), trained.val_proba, rtol=1e-5)


def test_random_erasing_blanks_one_rectangle_per_chosen_image():
    x = torch.full((50, 1, 28, 28), 200.0)
    erased = _erase(x, 1.0, torch.Generator().manual_seed(0))
    blank = (erased == 0).float().mean(dim=(1, 2, 3))
    assert ((blank >= 0.005) & (blank <= 0.35)).all()  # about 2-25% of the area, after rounding
    assert torch.equal(_erase(x, 0.0, torch.Generator().manual_seed(0)), x)


def test_on_the_cpu_as_many_trainings_run_at_once_as_the_cores_hold(monkeypatch):
    from granular.nn import device

    monkeypatch.setattr(device.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "usable_cores", lambda: 8)
    assert device.concurrent_trainings(None) == 1  # each training uses every core
    assert device.concurrent_trainings(2) == 4
    assert device.concurrent_trainings(16) == 1


@pytest.mark.slow
def test_a_compiled_training_step_trains_the_same_model_weights(tmp_path):
    x, y = _data(32)
    config = CONFIG.model_copy(update={"epochs": 1, "compile": "on", "dropout": 0.0})  # inductor draws its own dropout masks
    compiled = fit(x, y, x, y, num_classes=3, config=config, runtime=RUNTIME)
    plain = fit(x, y, x, y, num_classes=3, config=config.model_copy(update={"compile": "off"}), runtime=RUNTIME)
    assert list(compiled.model.state_dict()) == list(plain.model.state_dict())  # no _orig_mod. names
    np.testing.assert_allclose(compiled.val_proba, plain.val_proba, atol=1e-3)  # fused kernels round differently
    save_checkpoint(tmp_path / "model.pt", compiled)
    np.testing.assert_allclose(predict_proba(load_checkpoint(tmp_path / "model.pt", RUNTIME), x, RUNTIME),
                               predict_proba(compiled, x, RUNTIME), rtol=1e-6)


def test_a_deeper_network_is_rebuilt_from_its_checkpoint(tmp_path):
    x, y = _data(32)
    shallow = fit(x, y, x, y, num_classes=3, config=CONFIG.model_copy(update={"epochs": 1}), runtime=RUNTIME)
    deep = fit(x, y, x, y, num_classes=3, config=CONFIG.model_copy(update={"epochs": 1, "depth": 3}), runtime=RUNTIME)
    assert _parameters(deep) > _parameters(shallow)
    save_checkpoint(tmp_path / "model.pt", deep)
    loaded = load_checkpoint(tmp_path / "model.pt", RUNTIME)
    assert loaded.model.config.depth == 3
    np.testing.assert_allclose(predict_proba(loaded, x, RUNTIME), predict_proba(deep, x, RUNTIME), rtol=1e-6)


def test_pooling_before_the_norm_computes_what_the_older_layout_did_and_older_checkpoints_still_load(tmp_path):
    from granular.nn.models import CNNConfig, ResidualCNN, rebuild

    torch.manual_seed(0)
    older = ResidualCNN(CNNConfig(in_channels=1, num_classes=3, width=4, pool_first=False)).eval()
    for module in older.modules():  # BatchNorm statistics and positive scales, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1), module.running_var.uniform_(0.5, 2), module.weight.data.uniform_(0.5, 2)
    state = older.state_dict()
    config = older.config.to_dict()
    del config["pool_first"]  # what a checkpoint written before the option holds
    reloaded = rebuild("ResidualCNN", config).eval()
    reloaded.load_state_dict(state)  # strict: the older layout, parameter for parameter
    newer = ResidualCNN(CNNConfig(in_channels=1, num_classes=3, width=4)).eval()
    newer.load_state_dict(dict(zip(newer.state_dict(), state.values())))  # the same weights, renamed
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(newer(x), older(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(reloaded(x), older(x))


@pytest.mark.parametrize("side, maps", [(28, 14), (14, 7), (8, 8), (32, 16), (64, 16), (96, 12), (128, 16)])
def test_the_stem_pools_an_image_to_16x16_or_under_so_a_large_photo_costs_about_what_a_small_one_does(side, maps):
    network = Pixels(np.zeros((2, side, side, 3), np.float32)).network(3, CONFIG)
    after_stem = network.features[:2](torch.zeros(2, 3, side, side))
    assert after_stem.shape[-2:] == (maps, maps)
    # However much the stem pools, the weights are named alike: a resolution stage hands them
    # over between input sizes.
    full = Pixels(np.zeros((2, 28, 28, 3), np.float32)).network(3, CONFIG)
    network.load_state_dict(full.state_dict())


def test_checkpoints_that_say_the_stem_pools_or_not_still_load():
    from granular.nn.models import CNNConfig

    assert CNNConfig(in_channels=1, num_classes=2, stem_pool=True).stem_pool == 2
    assert CNNConfig(in_channels=1, num_classes=2, stem_pool=False).stem_pool == 1


def _table(n: int, seed: int = 0):
    """Classes that need both kinds of feature: (category + [first numeric > 0]) mod 3."""
    from granular.nn.inputs import TableArrays

    rng = np.random.default_rng(seed)
    category = rng.integers(0, 5, n)
    numeric = rng.normal(size=(n, 3)).astype(np.float32) * [1, 10, 100]  # scales the MLP must undo
    y = (category + (numeric[:, 0] > 0)) % 3
    codes = np.stack([category, rng.integers(0, 3, n)], axis=1)  # the second column is noise
    return TableArrays(numeric.astype(np.float32), codes, (5, 3)), y


TABLE_CONFIG = TrainConfig(epochs=6, batch_size=64, width=32, depth=1, lr=0.05, dropout=0.1, seed=3)


def test_the_mlp_learns_a_rule_that_needs_numeric_and_categorical_features():
    x, y = _table(1500)
    x_test, y_test = _table(500, seed=1)
    trained = fit(x, y, x_test, y_test, num_classes=3, config=TABLE_CONFIG, runtime=RUNTIME)
    assert type(trained.model).__name__ == "TabularMLP" and trained.tta is False
    accuracy = (predict_proba(trained, x_test, RUNTIME).argmax(1) == y_test).mean()
    assert accuracy > 0.9  # the category alone gets about 0.5, the numeric feature alone 1/3


def test_categories_unseen_in_training_share_the_unknown_embedding():
    x, y = _table(200)
    trained = fit(x, y, x, y, num_classes=3, config=TABLE_CONFIG.model_copy(update={"epochs": 1}), runtime=RUNTIME)
    unseen = [x[:10] for _ in range(2)]
    unseen[0].codes[:, 0], unseen[1].codes[:, 0] = -1, 99  # both outside the 5 known categories
    first, second = (predict_proba(trained, table, RUNTIME) for table in unseen)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first.sum(axis=1), 1, rtol=1e-5)


def test_a_table_checkpoint_rebuilds_the_mlp_and_its_column_scaling(tmp_path):
    x, y = _table(200)
    trained = fit(x, y, x, y, num_classes=3, config=TABLE_CONFIG.model_copy(update={"epochs": 1}), runtime=RUNTIME)
    save_checkpoint(tmp_path / "model.pt", trained)
    loaded = load_checkpoint(tmp_path / "model.pt", RUNTIME)
    assert loaded.model.config == trained.model.config
    np.testing.assert_allclose(loaded.std.numpy(), x.numeric.std(axis=0), rtol=1e-4)
    np.testing.assert_array_equal(predict_proba(loaded, x, RUNTIME), predict_proba(trained, x, RUNTIME))


def test_a_table_training_stopped_after_an_epoch_resumes_to_the_same_weights(tmp_path):
    x, y = _table(300)
    config = TABLE_CONFIG.model_copy(update={"epochs": 3})
    whole = fit(x, y, x, y, num_classes=3, config=config, runtime=RUNTIME, checkpoint_dir=tmp_path / "whole")

    def crash_after_first_epoch(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(x, y, x, y, num_classes=3, config=config, runtime=RUNTIME, checkpoint_dir=tmp_path / "cut",
            on_epoch=crash_after_first_epoch)
    messages = []
    resumed = fit(x, y, x, y, num_classes=3, config=config, runtime=RUNTIME, checkpoint_dir=tmp_path / "cut",
                  warn=messages.append)
    assert any("resuming from checkpoint at epoch 2" in m for m in messages)
    for name, weights in whole.model.state_dict().items():
        assert torch.equal(weights, resumed.model.state_dict()[name]), name
