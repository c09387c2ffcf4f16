"""A trained network, in memory and on disk: its weights, input scaling and what it is for.

A checkpoint holds everything needed to rebuild the network (architecture, config, weights), so
a saved model loads without the code or settings that trained it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from granular.nn import models
from granular.nn.device import Runtime
from granular.nn.quantize import INT8_DYNAMIC, quantize_int8
from granular.store.atomic import atomic_path


@dataclass
class TrainedModel:
    model: nn.Module  # ResidualCNN or TabularMLP
    mean: float | torch.Tensor  # input scaling, measured on the training split: per column for tables
    std: float | torch.Tensor
    history: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # what the model is for: view, classes, config
    val_proba: np.ndarray | None = None  # validation probabilities of the final weights
    tta: bool = True  # predict as the mean over the image and its mirror image
    tta_shift: int = 0  # and over copies shifted by this many pixels (granular/nn/inputs.py: _test_time_copies)
    # A regressor's (mean, std) of the training targets: it learns the standardised value, one
    # output; None for a classifier.
    target_scale: tuple[float, float] | None = None
    learner: ClassVar[str] = "network"

    @property
    def regression(self) -> bool:
        return self.target_scale is not None

    @property
    def num_classes(self) -> int:
        return self.model.config.num_classes

    def save(self, path: Path) -> None:
        save_checkpoint(path, self)


def save_checkpoint(path: Path, trained: TrainedModel, quantize: str | None = None) -> None:
    """Everything needed to rebuild the model: its architecture and config, weights and input
    scaling. `quantize` ("int8-dynamic", see granular/nn/quantize.py) is stored as a flag beside the
    float weights, and load_checkpoint quantises the rebuilt model again."""
    state = {
        "architecture": type(trained.model).__name__,
        "model_config": trained.model.config.to_dict(),
        "state_dict": trained.model.state_dict(),
        "mean": trained.mean,
        "std": trained.std,
        "tta": trained.tta,
        "history": trained.history,
        "meta": trained.meta,
    }
    if trained.tta_shift:  # absent otherwise, as in checkpoints written before it existed
        state["tta_shift"] = trained.tta_shift
    if trained.target_scale is not None:  # a regressor's; absent for a classifier
        state["target_scale"] = list(trained.target_scale)
    if quantize is not None:  # absent otherwise: plain checkpoints stay byte for byte as they were
        state["quantize"] = quantize
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, runtime: Runtime) -> TrainedModel:
    """The model a checkpoint describes, on the runtime's device. A checkpoint flagged
    "int8-dynamic" is quantised after loading on the CPU; on a GPU its float weights serve,
    since int8 dynamic kernels run on the CPU only."""
    state = torch.load(path, map_location=runtime.device, weights_only=True)
    model = models.rebuild(state["architecture"], state["model_config"])
    model.load_state_dict(state["state_dict"])
    model = model.to(runtime.device, memory_format=torch.channels_last)
    quantize = state.get("quantize")
    if quantize is not None:
        if quantize != INT8_DYNAMIC:
            raise ValueError(f"{path}: unknown quantisation {quantize!r}; known: {INT8_DYNAMIC!r}")
        if runtime.device.type == "cpu":
            model = quantize_int8(model)
    return TrainedModel(
        model=model, mean=state["mean"], std=state["std"], tta=state["tta"], tta_shift=state.get("tta_shift", 0),
        history=state["history"], meta=state["meta"],
        target_scale=tuple(state["target_scale"]) if "target_scale" in state else None,
    )
