"""Precision is decided once per device: bf16 autocast where the hardware runs it natively."""
from pathlib import Path

import numpy as np
import torch

from granular.config import TrainConfig
from granular.nn.device import autocast_dtype, cpu_flags, select_runtime
from granular.nn.inputs import Pixels
from granular.nn.predict import predict_proba
from granular.nn.train import fit

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def test_auto_is_bf16_on_cpus_with_native_bf16_and_on_cuda_fp32_elsewhere():
    assert autocast_dtype(CPU, "auto", frozenset({"avx2", "amx_bf16", "amx_tile"})) == torch.bfloat16
    assert autocast_dtype(CPU, "auto", frozenset({"avx512f", "avx512_bf16"})) == torch.bfloat16
    assert autocast_dtype(CPU, "auto", frozenset({"avx2", "avx512f"})) is None  # bf16 would be emulated
    assert autocast_dtype(CPU, "auto", frozenset()) is None
    assert autocast_dtype(CUDA, "auto", frozenset()) == torch.bfloat16
    assert autocast_dtype(torch.device("mps"), "auto", frozenset({"amx_bf16"})) is None


def test_a_precision_asked_for_is_taken_on_any_device():
    for device in (CPU, CUDA):
        assert autocast_dtype(device, "fp32", frozenset({"amx_bf16"})) is None
        assert autocast_dtype(device, "bf16", frozenset()) == torch.bfloat16


def test_cpu_flags_are_read_from_the_kernels_listing(tmp_path: Path):
    listing = tmp_path / "cpuinfo"
    listing.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 amx_bf16 avx512_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2 amx_bf16 avx512_bf16\n")
    assert cpu_flags(listing) == {"fpu", "avx2", "amx_bf16", "avx512_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()  # not Linux: no flags, so fp32


def test_a_bf16_runtime_trains_and_predicts_on_this_cpu():
    rng = np.random.default_rng(0)
    y = np.arange(96) % 3
    x = Pixels((rng.random((96, 8, 8)) * 60 + y[:, None, None] * 80).astype(np.float32))
    runtime = select_runtime(threads=1, precision="bf16")
    assert runtime.precision == "bf16" and "bf16" in runtime.name
    trained = fit(x, y, x, y, num_classes=3, config=TrainConfig(epochs=3, batch_size=16, width=4), runtime=runtime)
    proba = predict_proba(trained, x, runtime)
    assert proba.dtype == np.float32 and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert (proba.argmax(1) == y).mean() > 0.9  # the classes are far apart: bf16 learns them too
