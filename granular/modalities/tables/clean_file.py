"""A clean table on disk (data/interim/clean.npz and schema.json): written by cleaning, read by
every later step. Each feature column is kept once: numeric as float32, categorical as codes
into the column's sorted values."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from granular.store.atomic import read_npz
from granular.store.paths import ProjectPaths

NUMERIC, CATEGORICAL, VOCAB = "num.", "cat.", "vocab."  # key prefixes in clean.npz


@dataclass(frozen=True)
class CleanTable:
    frame: pd.DataFrame  # feature and segment columns; categoricals as pandas categories
    labels: np.ndarray  # (N,) fine label ids
    index: np.ndarray  # (N,) row number in the imported table(s): the example's id
    target: np.ndarray | None = None  # (N,) float64: a regression target's values


TARGET = "value"  # in clean.npz: a regression target's values


def feature_columns(schema: dict) -> list[str]:
    return list(schema["columns"])


def load_schema(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def load_clean(paths: ProjectPaths) -> CleanTable:
    arrays = read_npz(paths.clean)
    columns = {}
    for key, values in arrays.items():
        if key.startswith(NUMERIC):
            columns[key.removeprefix(NUMERIC)] = values
        elif key.startswith(CATEGORICAL):
            name = key.removeprefix(CATEGORICAL)
            columns[name] = pd.Categorical.from_codes(values, categories=arrays[VOCAB + name])
    return CleanTable(frame=pd.DataFrame(columns), labels=arrays["label"], index=arrays["index"], target=arrays.get(TARGET))
