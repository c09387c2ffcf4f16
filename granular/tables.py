"""A table as the networks see it: numeric features and categorical codes, row by row."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNKNOWN = -1  # the code of a category not seen in the training split


@dataclass(frozen=True)
class TableArrays:
    numeric: np.ndarray  # (N, F) float32, finite: imputed, not yet scaled
    codes: np.ndarray  # (N, C) int64: 0..cardinality-1, or UNKNOWN
    cardinalities: tuple[int, ...]  # known categories of each categorical column

    def __post_init__(self) -> None:
        if self.numeric.ndim != 2 or self.codes.ndim != 2:
            raise ValueError(f"numeric and codes must be 2-d, got shapes {self.numeric.shape} and {self.codes.shape}")
        if len(self.numeric) != len(self.codes):
            raise ValueError(f"{len(self.numeric)} rows of numeric features but {len(self.codes)} of categorical codes")
        if self.codes.shape[1] != len(self.cardinalities):
            raise ValueError(f"{self.codes.shape[1]} categorical columns but {len(self.cardinalities)} cardinalities")
        if self.numeric.shape[1] + self.codes.shape[1] == 0:
            raise ValueError("a table needs at least one feature column")
        if not np.issubdtype(self.codes.dtype, np.integer):
            raise ValueError(f"categorical codes must be integers, got {self.codes.dtype}")
        finite = np.isfinite(self.numeric)
        if not finite.all():
            row, column = np.argwhere(~finite)[0]
            raise ValueError(f"numeric column {column} holds {self.numeric[row, column]} at row {row}: impute first")

    def __len__(self) -> int:
        return len(self.numeric)

    def __getitem__(self, rows) -> "TableArrays":
        return TableArrays(self.numeric[rows], self.codes[rows], self.cardinalities)
