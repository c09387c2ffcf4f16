"""Compression of a trained network, and what it costs and gains: int8 dynamic quantisation,
magnitude pruning, and a report of test accuracy, latency and size before and after each.

What each does, honestly:
- Dynamic quantisation (granular/nn/quantize.py) stores only `nn.Linear` weights as int8. A
  CNN's convolutions stay float, so in the ResidualCNN, whose only Linear layer is the small
  classifier head, it changes little in size or speed. Its int8 kernels run on the CPU only.
- Unstructured pruning zeroes the weights of smallest magnitude across all convolutions and
  Linear layers at once. The weights keep their dense shape: the state dict is no smaller and
  dense kernels are no faster; it is what a sparse format or a sparse runtime would build on.
"""
from __future__ import annotations

import copy
import io
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
from torch.nn.utils import prune

from granular.nn.device import Runtime
from granular.nn.inputs import NetworkInputs
from granular.nn.quantize import INT8_DYNAMIC, quantize_int8, runtime_for
from granular.nn.predict import predict_proba
from granular.nn.trained import TrainedModel, save_checkpoint



def _prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _layer_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weight of every convolution and Linear layer; a quantised Linear's, unpacked."""
    weights = []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weights.append(module.weight.detach())
        elif isinstance(module, DynamicQuantizedLinear):
            weights.append(module.weight().dequantize())
    return weights


def weight_sparsity(model: nn.Module) -> float:
    """The share of zeros among the weights of the convolutions and Linear layers (int8
    rounding keeps a zero at zero, and may add a few)."""
    weights = _layer_weights(model)
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


def prune_magnitude(model: nn.Module, amount: float) -> tuple[nn.Module, float]:
    """A copy of `model` whose `amount` share of convolution and Linear weights with the
    smallest magnitude, ranked over all those layers together (global L1), is zero for good
    (no pruning masks left); and the sparsity reached."""
    if not 0 < amount < 1:
        raise ValueError(f"prune amount must be a share between 0 and 1, got {amount}")
    # Pruning flattens the weights with .view(), which channels-last convolutions refuse.
    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    targets = _prunable(model)
    if not targets:
        raise ValueError(f"{type(model).__name__} has no convolution or Linear weights to prune")
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    for module, name in targets:
        prune.remove(module, name)  # the mask is applied to the weights and dropped
    return model.to(memory_format=torch.channels_last), weight_sparsity(model)


def compressed_variants(
    trained: TrainedModel, prune_amount: float | None, quantize: bool
) -> dict[str, TrainedModel]:
    """The network as trained ("float"), then after each enabled compression in turn:
    "pruned", then "int8" (the pruned network quantised, when both are on). The last one is
    the one to serve."""
    variants = {"float": trained}
    if prune_amount:
        pruned, _ = prune_magnitude(trained.model, prune_amount)
        variants["pruned"] = replace(trained, model=pruned)
    if quantize:
        last = list(variants.values())[-1]
        variants["int8"] = replace(last, model=quantize_int8(last.model))
    return variants


def save_served(path: Path, variants: dict[str, TrainedModel]) -> str:
    """Save the last variant, the one to serve, as a checkpoint that load_checkpoint (and so
    ViewModel and FusedClassifier) rebuilds; return its name. A pruned network is a plain
    checkpoint with zeros in its weights; an int8 one is saved as the float weights it was
    quantised from, flagged so that loading quantises them again."""
    served = list(variants)[-1]
    if served == "int8":
        float_weights = variants["pruned" if "pruned" in variants else "float"]
        save_checkpoint(path, float_weights, quantize=INT8_DYNAMIC)
    else:
        save_checkpoint(path, variants[served])
    return served


def _weights(model: nn.Module) -> list[torch.Tensor]:
    """Every weight and bias; a quantised Linear keeps its own packed, so they are unpacked."""
    tensors = [p.detach() for p in model.parameters()]
    for module in model.modules():
        if isinstance(module, DynamicQuantizedLinear):
            tensors.append(module.weight().dequantize())
            if module.bias() is not None:
                tensors.append(module.bias().detach())
    return tensors


def model_size(model: nn.Module) -> dict[str, int]:
    """Parameter count, how many are non-zero, and the bytes of the saved state dict."""
    weights = _weights(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return {
        "parameters": sum(w.numel() for w in weights),
        "nonzero_parameters": sum(int(torch.count_nonzero(w)) for w in weights),
        "state_dict_bytes": buffer.getbuffer().nbytes,
    }


def latency(
    trained: TrainedModel, inputs: NetworkInputs, runtime: Runtime, batch_size: int = 256, repeats: int = 5
) -> dict[str, float]:
    """Milliseconds to predict one batch (scaling, forward, test-time mirror if the model has
    it) and examples per second: the median of `repeats` timings after one untimed warm-up."""
    if len(inputs) < 1 or repeats < 1:
        raise ValueError("latency needs at least one image and one repeat")
    batch = inputs[:batch_size]
    predict_proba(trained, batch, runtime, batch_size=len(batch))  # warm-up: allocations, kernels
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict_proba(trained, batch, runtime, batch_size=len(batch))  # ends on the CPU: synchronised
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    return {"ms_per_batch": 1000 * median, "images_per_s": len(batch) / median, "batch_size": len(batch)}


def compression_report(
    variants: dict[str, TrainedModel], inputs: NetworkInputs, labels: np.ndarray, runtime: Runtime,
    batch_size: int = 256, repeats: int = 5,
) -> dict[str, dict]:
    """For each variant: test accuracy, latency, size, weight sparsity and the device it ran
    on (int8 variants on the CPU, where their kernels are)."""
    report = {}
    for name, trained in variants.items():
        device = runtime_for(trained.model, runtime)
        proba = predict_proba(trained, inputs, device)
        report[name] = {
            "accuracy": float((proba.argmax(axis=1) == labels).mean()),
            **latency(trained, inputs, device, batch_size, repeats),
            **model_size(trained.model),
            "sparsity": weight_sparsity(trained.model),
            "device": device.name,
        }
    return report

