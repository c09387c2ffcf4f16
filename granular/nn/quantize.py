"""Int8 dynamic quantisation: what a quantised checkpoint is rebuilt with, and what compression makes.

`torch.ao.quantization.quantize_dynamic` stores the weights of `nn.Linear` layers as int8 and
quantises their inputs on the fly; it touches no other layer. Its int8 kernels run on the CPU
only. PyTorch marks `torch.ao.quantization` deprecated in favour of torchao (not a dependency
here); the call still works in the pinned torch, and its warnings are silenced.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from granular.nn.device import Runtime

INT8_DYNAMIC = "int8-dynamic"  # the checkpoint flag: load the float weights, then quantise
CPU = Runtime(torch.device("cpu"), None)  # where int8 dynamic kernels run


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model`, on the CPU and in eval mode, with every nn.Linear replaced by an
    int8 dynamically quantised Linear; every other layer is left as it is (float)."""
    model = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices, on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def runtime_for(model: nn.Module, runtime: Runtime) -> Runtime:
    """Where a model can run: an int8 dynamically quantised one on the CPU only, in fp32 (its
    kernels refuse bf16 inputs, so no autocast)."""
    quantized = any(isinstance(m, DynamicQuantizedLinear) for m in model.modules())
    return CPU if quantized else runtime
