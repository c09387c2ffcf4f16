"""Compression: int8 dynamic quantisation of Linear layers, global magnitude pruning, the
checkpoint that brings a quantised network back, and the report of accuracy, speed and size."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from granular.config import TrainConfig
from granular.nn.compress import (
    compressed_variants,
    compression_report,
    latency,
    model_size,
    prune_magnitude,
    quantize_int8,
    save_served,
    weight_sparsity,
)
from granular.nn.device import select_runtime
from granular.nn.inputs import Pixels
from granular.nn.models import MLPConfig, TabularMLP
from granular.nn.predict import predict_proba
from granular.nn.train import fit
from granular.nn.trained import load_checkpoint, save_checkpoint

RUNTIME = select_runtime(threads=1, precision="fp32")  # the same numbers on every CPU


def _images(n: int, seed: int = 0) -> tuple[Pixels, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = (rng.random((n, 8, 8)) * 60 + y[:, None, None] * 80).astype(np.float32)
    return Pixels(x), y


@pytest.fixture(scope="module")
def trained():
    x, y = _images(96)
    return fit(x, y, x, y, num_classes=3, config=TrainConfig(epochs=2, batch_size=16, width=4, seed=1), runtime=RUNTIME)


def test_int8_replaces_every_linear_layer_and_leaves_the_convolutions_float(trained):
    quantized = quantize_int8(trained.model)
    kinds = [type(m) for m in quantized.modules()]
    assert DynamicQuantizedLinear in kinds and nn.Linear not in kinds
    assert nn.Conv2d in kinds  # dynamic quantisation touches Linear layers only
    assert any(isinstance(m, nn.Linear) for m in trained.model.modules())  # the original is untouched


def test_int8_predictions_agree_with_the_float_network():
    x, y = _images(240, seed=2)
    torch.manual_seed(0)  # an MLP: every layer but the embeddings is Linear, so all are quantised
    mlp = TabularMLP(MLPConfig(num_numeric=64, cardinalities=(), num_classes=3, width=64, depth=2)).eval()
    features = torch.as_tensor((x.images.reshape(len(x), -1) - 100) / 60)
    codes = torch.zeros((len(x), 0), dtype=torch.long)
    with torch.no_grad():
        float_pred = mlp(features, codes).argmax(1)
        int8_pred = quantize_int8(mlp)(features, codes).argmax(1)
    assert (float_pred == int8_pred).float().mean() >= 0.95
    assert model_size(quantize_int8(mlp))["state_dict_bytes"] < model_size(mlp)["state_dict_bytes"] / 2


@pytest.mark.parametrize("amount", [0.3, 0.7])
def test_pruning_reaches_the_requested_sparsity_with_the_smallest_weights(trained, amount):
    pruned, sparsity = prune_magnitude(trained.model, amount)
    assert sparsity == pytest.approx(amount, abs=0.01)
    assert weight_sparsity(pruned) == sparsity
    assert weight_sparsity(trained.model) < 0.01  # the original is untouched
    assert not any(name.endswith("_orig") or name.endswith("_mask") for name in pruned.state_dict())  # permanent
    before = torch.cat([m.weight.detach().flatten() for m in trained.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))])
    after = torch.cat([m.weight.detach().flatten() for m in pruned.modules() if isinstance(m, (nn.Conv2d, nn.Linear))])
    removed, kept = before[after == 0].abs(), before[after != 0].abs()
    assert removed.max() <= kept.min()  # global ranking by magnitude, over every layer at once


def test_a_prune_amount_outside_zero_and_one_is_refused(trained):
    with pytest.raises(ValueError, match="between 0 and 1"):
        prune_magnitude(trained.model, 1.0)


def test_a_served_int8_checkpoint_loads_quantised_with_the_same_predictions(trained, tmp_path):
    x, _ = _images(30, seed=3)
    variants = compressed_variants(trained, prune_amount=0.5, quantize=True)
    assert list(variants) == ["float", "pruned", "int8"]
    assert save_served(tmp_path / "model.pt", variants) == "int8"
    loaded = load_checkpoint(tmp_path / "model.pt", RUNTIME)
    assert any(isinstance(m, DynamicQuantizedLinear) for m in loaded.model.modules())
    assert weight_sparsity(loaded.model) >= 0.49  # the pruned weights, quantised on loading
    np.testing.assert_allclose(predict_proba(loaded, x, RUNTIME), predict_proba(variants["int8"], x, RUNTIME), atol=1e-6)


def test_a_checkpoint_with_an_unknown_quantisation_is_refused(trained, tmp_path):
    save_checkpoint(tmp_path / "model.pt", trained, quantize="int4-magic")
    with pytest.raises(ValueError, match="unknown quantisation 'int4-magic'"):
        load_checkpoint(tmp_path / "model.pt", RUNTIME)


def test_the_report_gives_accuracy_latency_and_size_of_every_variant(trained):
    x, y = _images(60, seed=4)
    variants = compressed_variants(trained, prune_amount=0.4, quantize=True)
    report = compression_report(variants, x, y, RUNTIME, batch_size=32, repeats=2)
    assert list(report) == ["float", "pruned", "int8"]
    for name, figures in report.items():
        expected = (predict_proba(variants[name], x, RUNTIME).argmax(1) == y).mean()
        assert figures["accuracy"] == pytest.approx(expected)
        assert figures["ms_per_batch"] > 0 and figures["batch_size"] == 32
        assert figures["images_per_s"] == pytest.approx(32 / figures["ms_per_batch"] * 1000)
        assert figures["parameters"] == report["float"]["parameters"]  # the same network, compressed
    assert report["float"]["nonzero_parameters"] > report["pruned"]["nonzero_parameters"]
    assert report["pruned"]["sparsity"] == pytest.approx(0.4, abs=0.01)
    assert report["int8"]["sparsity"] >= report["pruned"]["sparsity"]  # int8 keeps zeros at zero


def test_latency_needs_an_image(trained):
    with pytest.raises(ValueError, match="at least one image"):
        latency(trained, Pixels(np.zeros((0, 8, 8), dtype=np.float32)), RUNTIME)
