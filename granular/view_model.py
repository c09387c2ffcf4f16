"""One view's trained model, on disk and in memory: a single network, or one expert per segment
together with the segmenter that routes each image to its expert. (A table's view is a
granular.table_model.TableViewModel; `ViewModel.load` returns whichever the folder holds.)"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from granular.partition import pool
from granular.segments import SEGMENTER_FILE, ClusterSegmenter
from granular.table_model import TABLE_VIEW_FILE, TableViewModel, table_model_files
from granular.train import TrainedModel, load_checkpoint, predict_routed, save_checkpoint

MODEL_FILE = "model.pt"  # an unsegmented view's network


def expert_file(segment: int) -> str:
    return f"segment-{segment}.pt"


def model_files(folder: Path) -> list[Path]:
    """The files that make up the model saved in `folder` (what a bundle copies)."""
    if (folder / TABLE_VIEW_FILE).exists():
        return table_model_files(folder)
    if (folder / SEGMENTER_FILE).exists():
        count = ClusterSegmenter.load(folder / SEGMENTER_FILE).count
        return [folder / SEGMENTER_FILE] + [folder / expert_file(s) for s in range(count)]
    return [folder / MODEL_FILE]


def save_view_model(folder: Path, experts: list[TrainedModel], segmenter_file: Path | None) -> None:
    if segmenter_file is None:
        save_checkpoint(folder / MODEL_FILE, experts[0])
        return
    shutil.copy(segmenter_file, folder / SEGMENTER_FILE)
    for number, expert in enumerate(experts):
        save_checkpoint(folder / expert_file(number), expert)


@dataclass(frozen=True)
class ViewModel:
    level: str
    resolution: int
    experts: list[TrainedModel]
    segmenter: ClusterSegmenter | None

    @classmethod
    def load(cls, folder: Path, runtime) -> "ViewModel | TableViewModel":
        if (folder / TABLE_VIEW_FILE).exists():
            return TableViewModel.load(folder, runtime)
        files = model_files(folder)
        segmenter = ClusterSegmenter.load(files.pop(0)) if files[0].name == SEGMENTER_FILE else None
        experts = [load_checkpoint(f, runtime) for f in files]
        spec = experts[0].meta["view"]
        return cls(level=spec["level"], resolution=spec["resolution"], experts=experts, segmenter=segmenter)

    def predict_proba(self, images: np.ndarray, runtime) -> np.ndarray:
        """(N, H, W) images at full resolution, pixels 0..255 -> (N, classes of its level)."""
        segment = self.segmenter.assign(images) if self.segmenter else np.zeros(len(images), dtype=np.int64)
        return predict_routed(self.experts, segment, pool(images, self.resolution), runtime)
