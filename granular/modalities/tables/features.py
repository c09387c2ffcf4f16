"""Turn a cleaned table into TableArrays, with everything learned from the training rows only.

- Numeric columns: a missing value becomes the column's training median (0 when the training
  rows hold no value at all, with a warning). No scaling here: granular/nn/train.py scales the
  numeric features by the training split's mean and std (`_input_statistics`) and keeps
  those statistics with the model, so scaling here would do it twice.
- Categorical columns: the vocabulary is the training categories sorted by name; code i is
  vocabulary[i]. A category the training rows lack AND a missing value both get
  granular.tables.UNKNOWN (-1), which TabularMLP embeds in its own "unknown" row: neither
  says which category the row has, and missing values in the training rows are what teach
  that row (unseen categories never occur in training).

The encoder is saved with the model (`save` / `load`, JSON) so predictions encode alike.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from granular.modalities.tables.schema import NUMERIC, category_labels
from granular.nn.inputs import UNKNOWN, TableArrays
from granular.store.atomic import write_json


class FeatureEncoder:
    """fit(train_frame, schema) -> self; transform(frame, columns) -> TableArrays."""

    def fit(self, train_frame: pd.DataFrame, schema: dict) -> "FeatureEncoder":
        self.medians_: dict[str, float] = {}
        self.vocabularies_: dict[str, list[str]] = {}
        self.warnings_: list[str] = []
        for name, spec in schema["columns"].items():
            if spec["type"] == NUMERIC:
                self.medians_[name] = self._median(train_frame[name], name)
            else:
                vocabulary = sorted(category_labels(train_frame[name]).dropna().unique().tolist())
                if not vocabulary:
                    self.warnings_.append(f"column {name}: no category in the training rows; every row is unknown")
                self.vocabularies_[name] = vocabulary
        return self

    def _median(self, series: pd.Series, name: str) -> float:
        median = pd.to_numeric(series, errors="coerce").median()
        if pd.isna(median):
            self.warnings_.append(f"column {name}: no value in the training rows; missing values become 0")
            return 0.0
        return float(median)

    @property
    def columns(self) -> list[str]:
        return [*self.medians_, *self.vocabularies_]

    def transform(self, frame: pd.DataFrame, columns: list[str] | None = None) -> TableArrays:
        """The rows of `frame` as TableArrays over `columns` (a feature group; None = all),
        numeric columns first, each part in the order the encoder was fitted in."""
        chosen = self.columns if columns is None else list(columns)
        unknown = [name for name in chosen if name not in self.medians_ and name not in self.vocabularies_]
        if unknown:
            raise ValueError(f"column(s) {unknown} were not fitted; the encoder knows {self.columns}")
        numeric_names = [name for name in self.medians_ if name in chosen]
        categorical_names = [name for name in self.vocabularies_ if name in chosen]
        missing = [name for name in numeric_names + categorical_names if name not in frame.columns]
        if missing:
            raise ValueError(f"column(s) {missing} are not in the table; its columns are {list(frame.columns)}")
        numeric = np.empty((len(frame), len(numeric_names)), dtype=np.float32)  # (N, F)
        for i, name in enumerate(numeric_names):
            numeric[:, i] = self._imputed(frame[name], name)
        codes = np.empty((len(frame), len(categorical_names)), dtype=np.int64)  # (N, C)
        for i, name in enumerate(categorical_names):
            codes[:, i] = self._codes(frame[name], name)
        cardinalities = tuple(len(self.vocabularies_[name]) for name in categorical_names)
        return TableArrays(numeric=numeric, codes=codes, cardinalities=cardinalities)

    def _imputed(self, series: pd.Series, name: str) -> np.ndarray:
        if not pd.api.types.is_numeric_dtype(series):  # text not cleaned away counts as missing
            series = pd.to_numeric(series, errors="coerce")
        values = series.to_numpy(dtype=np.float32, na_value=np.nan)
        return np.where(np.isnan(values), np.float32(self.medians_[name]), values)

    def _codes(self, series: pd.Series, name: str) -> np.ndarray:
        codes = pd.Index(self.vocabularies_[name]).get_indexer(category_labels(series))  # -1: not found
        return np.where(codes < 0, UNKNOWN, codes).astype(np.int64)

    def to_dict(self) -> dict:
        """JSON-able; lists keep the column order (JSON writers may sort mapping keys)."""
        return {
            "numeric": [{"name": name, "median": median} for name, median in self.medians_.items()],
            "categorical": [{"name": name, "categories": list(v)} for name, v in self.vocabularies_.items()],
            "warnings": list(self.warnings_),
        }

    @classmethod
    def from_dict(cls, document: dict) -> "FeatureEncoder":
        encoder = cls()
        try:
            encoder.medians_ = {str(c["name"]): float(c["median"]) for c in document["numeric"]}
            encoder.vocabularies_ = {str(c["name"]): [str(v) for v in c["categories"]] for c in document["categorical"]}
            encoder.warnings_ = [str(w) for w in document.get("warnings", [])]
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"not a saved FeatureEncoder: {error!r}") from None
        return encoder

    def save(self, path: Path) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> "FeatureEncoder":
        return cls.from_dict(json.loads(Path(path).read_text()))
