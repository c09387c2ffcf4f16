"""One table view's trained model: the feature encoder fitted on the training split, a global
network, and optionally one expert per frequent value of a segment column. Rows of a value
without an expert (too rare in training, or never seen) are answered by the global network."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from granular.features import FeatureEncoder
from granular.segments import segment_values
from granular.train import TrainedModel, load_checkpoint, predict_routed, save_checkpoint

TABLE_VIEW_FILE = "table_view.json"
ENCODER_FILE = "encoder.json"
GLOBAL_MODEL_FILE = "model.pt"


def expert_file(number: int) -> str:
    """Expert 1..E; number 0 is the global network (model.pt)."""
    return f"segment-{number}.pt"


def table_model_files(folder: Path) -> list[Path]:
    spec = json.loads((folder / TABLE_VIEW_FILE).read_text())
    experts = [folder / expert_file(n) for n in range(1, len(spec["expert_values"]) + 1)]
    return [folder / TABLE_VIEW_FILE, folder / ENCODER_FILE, folder / GLOBAL_MODEL_FILE, *experts]


def save_table_view_model(
    folder: Path, level: str, columns: list[str], encoder: FeatureEncoder, models: list[TrainedModel],
    segment_column: str | None, expert_values: list[str],
) -> None:
    """`models[0]` is the global network, `models[k]` the expert of `expert_values[k - 1]`."""
    spec = {"level": level, "columns": columns, "segment_column": segment_column, "expert_values": expert_values}
    (folder / TABLE_VIEW_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    encoder.save(folder / ENCODER_FILE)
    save_checkpoint(folder / GLOBAL_MODEL_FILE, models[0])
    for number, model in enumerate(models[1:], start=1):
        save_checkpoint(folder / expert_file(number), model)


def route(values: pd.Series, expert_values: list[str]) -> np.ndarray:
    """The model of each row: 1 + the index of its segment value among those with an expert,
    else 0 (the global network)."""
    number = {value: n for n, value in enumerate(expert_values, start=1)}
    return segment_values(values).map(number).fillna(0).to_numpy(dtype=np.int64)


@dataclass(frozen=True)
class TableViewModel:
    level: str
    columns: list[str]
    encoder: FeatureEncoder
    models: list[TrainedModel]
    segment_column: str | None
    expert_values: list[str]

    @classmethod
    def load(cls, folder: Path, runtime) -> "TableViewModel":
        spec = json.loads((folder / TABLE_VIEW_FILE).read_text())
        files = table_model_files(folder)[2:]
        return cls(
            level=spec["level"], columns=spec["columns"], encoder=FeatureEncoder.load(folder / ENCODER_FILE),
            models=[load_checkpoint(f, runtime) for f in files],
            segment_column=spec["segment_column"], expert_values=spec["expert_values"],
        )

    def predict_proba(self, frame: pd.DataFrame, runtime) -> np.ndarray:
        """Rows with the raw feature columns (as read from the file) -> (N, classes of its level)."""
        arrays = self.encoder.transform(frame, self.columns)
        if self.segment_column is None:
            segment = np.zeros(len(frame), dtype=np.int64)
        else:
            segment = route(frame[self.segment_column], self.expert_values)
        return predict_routed(self.models, segment, arrays, runtime)
