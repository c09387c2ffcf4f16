"""Cleaning a table: keep the valid rows, set every rejected one aside with its reason and
where it came from (file and data row), like granular/modalities/images/clean.py does for images.

A row is rejected for the first of these faults it has, each naming its column:
1. missing target (a regression's: a target that is not a finite number);
2. unknown label (a target not among the taxonomy's fine classes, when they are given);
3. a numeric column holding a value that is not a number;
4. +-inf in a numeric column;
5. a missing ancestor label, or one that is not the parent its fine class has in most rows
   (a fine class has one parent per level; ties go to the parent first by name);
6. an id that other rows carry with another label (all of them are rejected), or with the
   same label (the first row is kept, the others are duplicates).
Faults 5 and 6 are judged among the rows still valid after the earlier ones. A missing
feature value is no fault: it is imputed (granular/modalities/tables/features.py).
Everything is vectorised over columns; no Python loop runs per row.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from granular.config import TableConfig
from granular.core.quarantine import UNKNOWN_LABELS
from granular.core.taxonomy import Taxonomy, TaxonomyError, parse_taxonomy
from granular.modalities.tables.schema import NUMERIC, columns_of_type
from granular.modalities.tables.source import row_origins
from granular.problems import problem_named

FILE, ROW, REASON = "file", "row", "reason"  # the rejected frame's own columns


@dataclass(frozen=True)
class TableCleanResult:
    kept: pd.DataFrame  # valid rows; numeric columns parsed to float32
    rejected: pd.DataFrame  # file, row, the original cells, reason
    faults: np.ndarray  # (n_rejected,) str: each rejected row's reason without the cell's value
    unknown_labels: dict[str, int] = field(default_factory=dict)  # set aside: label the taxonomy lacks -> rows

    @property
    def report(self) -> dict:
        return {
            "examined": len(self.kept) + len(self.rejected),
            "kept": len(self.kept),
            "rejected": len(self.rejected),
            "rejected_by_reason": dict(sorted(Counter(self.faults.tolist()).items())),
            UNKNOWN_LABELS: self.unknown_labels,
        }


class _Faults:
    """The first fault of each row: a kind (for counting) and a reason (for the reader)."""

    def __init__(self, n: int):
        self.kind = np.full(n, "", dtype=object)
        self.reason = np.full(n, "", dtype=object)

    def valid(self) -> np.ndarray:
        return self.kind == ""

    def add(self, mask: np.ndarray, kind: str, reason: Callable[[np.ndarray], object] | None = None) -> None:
        """Mark the still-valid rows of `mask`; `reason(rows)` words each one (default: kind)."""
        rows = np.flatnonzero(np.asarray(mask, dtype=bool) & self.valid())
        if rows.size:
            self.kind[rows] = kind
            self.reason[rows] = np.asarray(reason(rows), dtype=object) if reason else kind


def _text(values) -> np.ndarray:
    return pd.Series(np.asarray(values, dtype=object), dtype=object).astype("str").to_numpy(dtype=object)


def _codes(series: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes of the values, in name order; -1 = missing. Grouping codes is far faster
    than grouping strings."""
    return pd.factorize(series, sort=True)


def clean_table(
    frame: pd.DataFrame, config: TableConfig, schema: dict, level_names: dict[str, list[str]] | None = None
) -> TableCleanResult:
    """Split `frame` (as read by granular/table_source.read_table) into kept and rejected rows.
    `schema` says which columns are numeric; `level_names` (level -> class names, finest level
    first, e.g. Taxonomy.names) gives the known fine classes."""
    faults = _Faults(len(frame))
    target = frame[config.target]
    _check_target(faults, target, config.target, level_names)
    numeric_target = problem_named(config.task).numeric_target  # a quantity: each row's a finite number
    quantity = _check_numeric(faults, target, config.target, np.float64) if numeric_target else None
    parsed = {column: _check_numeric(faults, frame[column], column) for column in columns_of_type(schema, NUMERIC)}
    fine, _ = _codes(target)
    for column in config.ancestors.values():
        _check_ancestor(faults, target, fine, frame[column], column)
    if config.id:
        _check_ids(faults, frame[config.id], fine, config.id)
    if config.split:
        _check_split(faults, frame[config.split], config.split)

    keep = faults.valid()
    kept = frame.iloc[np.flatnonzero(keep)].copy()
    for column, values in parsed.items():
        kept[column] = values[keep]
    if quantity is not None:
        kept[config.target] = quantity[keep]
    rejected_rows = np.flatnonzero(~keep)
    unknown = target[faults.kind == _unknown_label(config.target)].astype("string")
    return TableCleanResult(
        kept=kept,
        rejected=_rejected_frame(frame, rejected_rows, faults.reason[rejected_rows]),
        faults=faults.kind[rejected_rows].astype(str),
        unknown_labels={str(label): int(n) for label, n in unknown.value_counts().sort_index().items()},
    )


def _missing(series: pd.Series) -> np.ndarray:
    return (series.isna() | (series.astype("str").str.strip() == "")).to_numpy(dtype=bool)


def _unknown_label(column: str) -> str:
    return f"column {column}: unknown label"


def _check_target(faults: _Faults, target: pd.Series, column: str, level_names: dict | None) -> None:
    faults.add(_missing(target), f"column {column}: missing target")
    if level_names:
        fine_level, fine_names = next(iter(level_names.items()))
        faults.add(
            ~target.isin(list(fine_names)).to_numpy(dtype=bool), _unknown_label(column),
            lambda r: f"column {column}: unknown label '" + _text(target.iloc[r]) + f"' (not a {fine_level} class)",
        )


# The values a given split column may hold (any case, spaces around ignored), and their split.
SPLIT_VALUES = {"train": "train", "val": "val", "validation": "val", "test": "test"}


def given_splits(values: pd.Series) -> pd.Series:
    """A split column's values as train, val or test (missing where it is none of them)."""
    return values.astype("string").str.strip().str.lower().map(SPLIT_VALUES)


def _check_split(faults: _Faults, values: pd.Series, column: str) -> None:
    faults.add(_missing(values), f"column {column}: missing split")
    unknown = given_splits(values).isna().to_numpy(dtype=bool)
    faults.add(
        unknown, f"column {column}: not a split",
        lambda r: f"column {column}: '" + _text(values.iloc[r]) + "' is not a split (train, val or test)",
    )


def _check_numeric(faults: _Faults, series: pd.Series, column: str, dtype=np.float32) -> np.ndarray:
    """Reject cells that are not numbers or are infinite; return the column as `dtype`."""
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if not pd.api.types.is_numeric_dtype(series):
        faults.add(
            np.isnan(numbers) & series.notna().to_numpy(dtype=bool), f"column {column}: not a number",
            lambda r: f"column {column}: '" + _text(series.iloc[r]) + "' is not a number",
        )
    faults.add(
        np.isinf(numbers), f"column {column}: infinite value",
        lambda r: f"column {column}: " + _text(numbers[r]) + " is not a finite number",
    )
    with np.errstate(over="ignore"):
        return numbers.astype(dtype)


def _check_ancestor(faults: _Faults, target: pd.Series, fine: np.ndarray, parent: pd.Series, column: str) -> None:
    faults.add(_missing(parent), f"column {column}: missing ancestor label")
    valid = faults.valid()
    if not valid.any():
        return
    parents, parent_names = _codes(parent)
    width = int(parents.max()) + 1
    pairs, counts = np.unique(fine[valid] * width + parents[valid], return_counts=True)
    pair_fine, pair_parent = np.divmod(pairs, width)
    # The parent of most of a fine class's rows; a tie goes to the first by name (codes are in
    # name order).
    order = np.lexsort((pair_parent, -counts, pair_fine))
    first = order[np.r_[True, pair_fine[order][1:] != pair_fine[order][:-1]]]
    majority = np.full(int(fine.max()) + 1, -1, dtype=np.int64)
    majority[pair_fine[first]] = pair_parent[first]
    expected = np.where(valid, majority[fine], -1)
    faults.add(
        valid & (parents != expected), f"column {column}: not the usual parent of its fine class",
        lambda r: (
            f"column {column}: '" + _text(parent.iloc[r]) + "' is not '" + _text(parent_names[expected[r]])
            + "', the parent of fine class '" + _text(target.iloc[r]) + "' in most rows"
        ),
    )


def _check_ids(faults: _Faults, ids: pd.Series, fine: np.ndarray, column: str) -> None:
    id_codes, _ = pd.factorize(ids)
    positions = np.flatnonzero(faults.valid() & (id_codes >= 0))
    repeated = positions[pd.Series(id_codes[positions]).duplicated(keep=False).to_numpy()]
    if not repeated.size:
        return
    groups = pd.DataFrame({"id": id_codes[repeated], "label": fine[repeated]})
    conflicting = groups.groupby("id")["label"].transform("nunique").to_numpy() > 1
    mask = np.zeros(len(ids), dtype=bool)
    mask[repeated[conflicting]] = True
    faults.add(
        mask, f"column {column}: id carried with different labels",
        lambda r: f"column {column}: id '" + _text(ids.iloc[r]) + "' is carried by rows with different labels",
    )
    same = repeated[~conflicting]
    copies = np.zeros(len(ids), dtype=bool)
    copies[same[pd.Series(id_codes[same]).duplicated(keep="first").to_numpy()]] = True
    faults.add(
        copies, f"column {column}: duplicate id",
        lambda r: f"column {column}: duplicate id '" + _text(ids.iloc[r]) + "' (same label; its first row is kept)",
    )


def _rejected_frame(frame: pd.DataFrame, rows: np.ndarray, reasons: np.ndarray) -> pd.DataFrame:
    """The rejected rows' original cells, with their file, data row and reason in front and at
    the end; a meta column whose name a data column already has gets a leading '_'."""
    cells = frame.iloc[rows]
    names = list(frame.columns)
    file_name, row_name, reason_name = (_free_name(n, names) for n in (FILE, ROW, REASON))
    files, lines = row_origins(cells)
    out = cells.reset_index(drop=True)
    out.insert(0, row_name, lines)
    out.insert(0, file_name, np.asarray(files, dtype=object))
    out[reason_name] = reasons.astype(str)
    return out


def _free_name(name: str, taken: list[str]) -> str:
    while name in taken:
        name = "_" + name
    return name


def taxonomy_from_columns(frame: pd.DataFrame, config: TableConfig, fine_level: str = "fine") -> Taxonomy:
    """The taxonomy the target and ancestor columns of a CLEANED frame spell: levels `fine_level`
    then data.table.ancestors in their order, the classes of each level sorted by name."""
    levels = [fine_level, *config.ancestors]
    columns = [config.target, *config.ancestors.values()]
    classes = frame[columns].drop_duplicates()
    classes.columns = levels
    if classes.isna().to_numpy().any():
        raise TaxonomyError(f"columns {columns} hold missing labels: clean the table first")
    for level, column in zip(levels[1:], columns[1:]):
        parents = classes.groupby(fine_level)[level].nunique()
        torn = parents.index[parents > 1].tolist()
        if torn:
            raise TaxonomyError(f"fine class(es) {sorted(torn)[:5]} have more than one parent in column {column!r}")
    classes = classes.astype(str).sort_values(fine_level)
    document = {"levels": levels, "classes": classes.to_dict("records")}
    checked = parse_taxonomy(document, source=f"columns {columns}")  # level names, one parent per level
    names = {level: tuple(sorted(checked.names[level])) for level in levels}
    parent = {level: pd.Index(names[level]).get_indexer(classes[level]).astype(np.int64) for level in levels}
    return Taxonomy(levels=tuple(levels), names=names, parent=parent)
