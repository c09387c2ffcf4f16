"""Inference of one trained network, and the precision it runs in (training's steps too)."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from granular.nn.device import Runtime
from granular.nn.inputs import NetworkInputs
from granular.nn.objective import of_trained
from granular.nn.quantize import runtime_for
from granular.nn.trained import TrainedModel


# Input values a prediction's batch holds at most: 1024 images of 28x28 (800 thousand values) fit
# many times over, 128x128 colour ones go 170 at a time.
BATCH_VALUES = 1 << 23


def autocast(runtime: Runtime):
    if runtime.autocast_dtype is None:
        return nullcontext()
    return torch.autocast(runtime.device.type, dtype=runtime.autocast_dtype)


@torch.no_grad()
def predict_proba(
    trained: TrainedModel, x: NetworkInputs, runtime: Runtime, batch_size: int = 1024, shifted: bool = True,
    augmented: bool = True, first: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities (N, classes); for an image model with test-time augmentation, the
    mean over the image and its shifted (unless not `shifted`) and mirrored copies (the inputs'
    test_time_copies); not `augmented`: of the image alone, one pass. `first`: the class
    probabilities of that one pass, computed already (by a cheaper stage of a cascade), which is
    not run again. A regressor's: its values (N, 1), in the target's units."""
    model = trained.model.eval()
    runtime = runtime_for(model, runtime)
    objective = of_trained(trained)
    if len(x):  # large images go in fewer at a time: a batch's activations grow with its pixels
        batch_size = max(1, min(batch_size, BATCH_VALUES // max(1, x[:1].to_device(runtime.device)[0].numel())))
    out = []
    mirror = trained.tta and augmented
    shift = trained.tta_shift if shifted and augmented else 0
    for start in range(0, len(x), batch_size):
        rows = x[start : start + batch_size]
        # Copied before scaling, so the pixels a shift uncovers are black, as in training.
        copies = rows.test_time_copies(rows.to_device(runtime.device), mirror, shift)
        known = [] if first is None else [torch.from_numpy(first[start : start + batch_size]).to(runtime.device)]
        with autocast(runtime):
            scaled = (rows.scaled(copy, trained.mean, trained.std) for copy in copies[len(known):])
            outputs = known + [objective.activation(model(*inputs).float()) for inputs in scaled]
            proba = sum(outputs) / len(copies)
        out.append(proba.cpu())
    if not out:
        return np.zeros((0, model.config.num_classes), dtype=np.float32)
    return objective.predictions(torch.cat(out), trained.target_scale)
