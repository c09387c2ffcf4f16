"""How a saved table view reads a table's rows (raw columns, as read from the file), and what a
served table model accepts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from granular.modalities.tables.features import FeatureEncoder

MODALITY = "tables"
ENCODER_FILE = "encoder.json"
MISSING_SEGMENT = "<missing>"  # a row whose segment column is empty


def segment_values(values: pd.Series) -> pd.Series:
    """A segment column as the names of its segments: text, a missing value named too."""
    return values.astype("string").fillna(MISSING_SEGMENT)


def route(values: pd.Series, expert_values: list[str]) -> np.ndarray:
    """The network of each row: 1 + the index of its segment value among those with an expert,
    else 0 (the global network)."""
    number = {value: n for n, value in enumerate(expert_values, start=1)}
    return segment_values(values).map(number).fillna(0).to_numpy(dtype=np.int64)


@dataclass(frozen=True)
class TableReader:
    """Encodes the view's feature columns with the encoder fitted on the training rows; routes a
    row to the expert of its segment value, or to the global network (0) when it has none."""

    columns: list[str]
    encoder: FeatureEncoder
    segment_column: str | None = None
    expert_values: tuple[str, ...] = ()
    modality = MODALITY

    def network_inputs(self, raw: pd.DataFrame):
        return self.encoder.transform(raw, self.columns)

    def columns_read(self) -> list[str]:
        return [*self.columns, *([self.segment_column] if self.segment_column else [])]

    def route(self, raw: pd.DataFrame) -> np.ndarray:
        if self.segment_column is None:
            return np.zeros(len(raw), dtype=np.int64)
        return route(raw[self.segment_column], list(self.expert_values))

    def save(self, folder: Path) -> dict[str, Any]:
        self.encoder.save(folder / ENCODER_FILE)
        return {"columns": self.columns, "segment_column": self.segment_column, "expert_values": list(self.expert_values)}

    def files(self, folder: Path) -> list[Path]:
        return [folder / ENCODER_FILE]

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any]) -> "TableReader":
        return cls(
            columns=spec["columns"], encoder=FeatureEncoder.load(folder / ENCODER_FILE),
            segment_column=spec["segment_column"], expert_values=tuple(spec["expert_values"]),
        )


@dataclass(frozen=True)
class TableInput:
    """A served table model takes rows with its feature columns (values as in the source file)."""

    columns: list[str]
    modality = MODALITY

    def to_json(self) -> dict[str, Any]:
        return {"modality": self.modality, "columns": list(self.columns)}

    def parse(self, model_input: Any) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"the input lacks the feature column(s) {missing}; the model reads {self.columns}")
        return frame[self.columns]

    def example(self, raw: pd.DataFrame) -> pd.DataFrame:
        return raw
