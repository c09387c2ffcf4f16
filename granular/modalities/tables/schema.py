"""The schema of a table's features (type of each column, categories of the categorical ones),
and how a new table drifts from a reference one.

Inference is kept simple on purpose: a column of a numeric pandas dtype (integers, floats,
booleans) is numeric, any other is categorical; data.table.types overrides either way. A column
declared numeric that holds text is no schema error: cleaning rejects the rows whose cell is not
a number (granular/modalities/tables/clean.py).
"""
from __future__ import annotations

import pandas as pd

from granular.config import TableConfig
from granular.modalities.tables.source import feature_columns

NUMERIC, CATEGORICAL = "numeric", "categorical"
_SHOWN_NEW_CATEGORIES = 5


def category_labels(series: pd.Series) -> pd.Series:
    """The column's values as strings, missing values kept missing: categories are compared,
    stored and saved as text."""
    if pd.api.types.is_string_dtype(series) and not pd.api.types.is_object_dtype(series):
        return series
    return series.astype("str").where(series.notna())


def infer_schema(frame: pd.DataFrame, config: TableConfig) -> dict:
    """{"columns": {name: {"type": "numeric", "dtype": ...} | {"type": "categorical",
    "categories": [sorted values seen in `frame`]}}}, in feature order; JSON-able."""
    names = feature_columns(list(frame.columns), config)
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise ValueError(f"feature column(s) {missing} not in the table; its columns are {list(frame.columns)}")
    columns = {}
    for name in names:
        series = frame[name]
        kind = config.types.get(name) or (NUMERIC if pd.api.types.is_numeric_dtype(series) else CATEGORICAL)
        if kind == NUMERIC:
            columns[name] = {"type": NUMERIC, "dtype": str(series.dtype)}
        else:
            categories = sorted(category_labels(series).dropna().unique().tolist())
            columns[name] = {"type": CATEGORICAL, "categories": categories}
    return {"columns": columns}


def columns_of_type(schema: dict, kind: str) -> list[str]:
    return [name for name, spec in schema["columns"].items() if spec["type"] == kind]


def schema_drift(reference: dict, current: dict) -> list[str]:
    """One line per difference of `current` from `reference`: a new or missing column, a changed
    type, new categories in a categorical column. None: no drift."""
    before, after = reference["columns"], current["columns"]
    lines = [f"new column {name!r} (not in the reference)" for name in after if name not in before]
    lines += [f"missing column {name!r} (in the reference)" for name in before if name not in after]
    for name in (n for n in before if n in after):
        old, new = before[name], after[name]
        if old["type"] != new["type"]:
            lines.append(f"column {name!r}: type changed from {old['type']} to {new['type']}")
        elif old["type"] == CATEGORICAL:
            added = sorted(set(new["categories"]) - set(old["categories"]))
            if added:
                shown = ", ".join(repr(value) for value in added[:_SHOWN_NEW_CATEGORIES])
                more = f" and {len(added) - _SHOWN_NEW_CATEGORIES} more" if len(added) > _SHOWN_NEW_CATEGORIES else ""
                noun = "category" if len(added) == 1 else "categories"
                lines.append(f"column {name!r}: {len(added)} new {noun}: {shown}{more}")
    return lines
