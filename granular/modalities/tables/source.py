"""Users' tables (CSV or Parquet): read only the columns the configuration needs, and refuse a
malformed file with a message that names the file, and the column or line at fault.

`path` is one file or a folder of files (every *.csv or *.parquet in it, sorted by name, all
with the same columns). The frame read is indexed by position 0..N-1 over the files in order (a
stable row id); `frame.attrs["files"]` lists [file name, row count] of each file, so that
`row_origins` finds a row's file and its 1-based data row there (the first row under a CSV
header is row 1). Label columns (target, id, ancestors) and categorical overrides are read as
strings; numeric feature columns become float32.
"""
from __future__ import annotations

import codecs
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from granular.config import TableConfig
from granular.config.feature_groups import expand_group

FILES = "files"  # the key of frame.attrs that lists [file name, row count] per file
_SUFFIXES = {"csv": ".csv", "parquet": ".parquet"}
_DELIMITERS = {",": "','", ";": "';'", "\t": "'\\t' (tab)", "|": "'|'"}


class TableSourceError(ValueError):
    """A table file is missing, unreadable or lacks a configured column; the message names it."""


def table_files(path: Path, fmt: str) -> list[Path]:
    """The file at `path`, or every *.csv / *.parquet file of the folder at `path`, sorted."""
    path = Path(path)
    if fmt not in _SUFFIXES:
        raise TableSourceError(f"{fmt!r} is not a table format; use one of {sorted(_SUFFIXES)}")
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == _SUFFIXES[fmt])
        if not files:
            raise TableSourceError(f"{path}: the folder holds no *{_SUFFIXES[fmt]} file")
        return files
    raise TableSourceError(f"{path}: no such file or folder")


def label_columns(config: TableConfig) -> list[str]:
    """The target, the id, the split and the ancestor columns: never features."""
    given = [column for column in (config.id, config.split) if column]
    return [config.target, *given, *config.ancestors.values()]


def feature_columns(available: list[str], config: TableConfig) -> list[str]:
    """The configured features, or every available column that is neither a label column nor excluded."""
    if config.features is not None:
        return list(config.features)
    never = {*label_columns(config), *config.exclude}
    return [column for column in available if column not in never]


def read_table(path: Path, fmt: str, config: TableConfig, columns: list[str] | None = None) -> pd.DataFrame:
    """The table's label and feature columns (or just `columns`), every file of a folder
    concatenated, indexed by position over the files in order (see the module docstring)."""
    files = table_files(path, fmt)
    header = _columns_of(files, fmt, config)
    wanted = list(columns) if columns is not None else _needed_columns(header, config)
    _require_columns(files[0], header, [*wanted, *config.exclude], config)
    as_text = [c for c in wanted if c in label_columns(config) or config.types.get(c) == "categorical"]
    read = _read_csv if fmt == "csv" else _read_parquet
    frames = [read(file, wanted, as_text, config) for file in files]
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    frame.index = pd.RangeIndex(len(frame))
    frame.attrs[FILES] = [[file.name, len(part)] for file, part in zip(files, frames)]
    return _numeric_as_float32(frame, skip=set(as_text))


def check_columns(path: Path, fmt: str, config: TableConfig, also: dict[str, str] | None = None) -> None:
    """Every column the settings name (and `also`: column -> its role, such as a view's segment
    column) is in the table, and each entry of a feature group names or matches a feature column:
    read from its files' headers alone, so a mistake is found before anything runs."""
    files = table_files(path, fmt)
    header = _columns_of(files, fmt, config)
    also = also or {}
    _require_columns(files[0], header, [*_needed_columns(header, config), *config.exclude, *also], config, also)
    features = feature_columns(header, config)
    for name, entries in config.feature_groups.items():
        try:
            expand_group(name, entries, features)
        except ValueError as error:
            raise TableSourceError(f"{files[0]}: {error}") from None


def row_origins(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The file name and 1-based data row of each row of `frame` (or of a selection of rows of
    a frame read_table returned). A frame made otherwise: no file, and its integer index + 1."""
    if FILES not in frame.attrs:
        integer = pd.api.types.is_integer_dtype(frame.index)
        positions = frame.index.to_numpy(dtype=np.int64) if integer else np.arange(len(frame))
        return np.full(len(frame), "", dtype=object), positions + 1
    names = np.array([name for name, _ in frame.attrs[FILES]], dtype=object)
    counts = np.array([count for _, count in frame.attrs[FILES]], dtype=np.int64)
    ends = np.cumsum(counts)
    positions = frame.index.to_numpy(dtype=np.int64)
    which = np.searchsorted(ends, positions, side="right")  # the file each position falls in
    return names[which], positions - (ends - counts)[which] + 1


def _needed_columns(header: list[str], config: TableConfig) -> list[str]:
    """The label and feature columns, and those typed; a feature group's columns are among the
    features (check_columns checks each group against them)."""
    needed = [*label_columns(config), *feature_columns(header, config), *config.types]
    return list(dict.fromkeys(needed))  # each once, in a stable order


def _require_columns(
    file: Path, header: list[str], wanted: list[str], config: TableConfig, roles: dict[str, str] | None = None
) -> None:
    missing = [c for c in wanted if c not in header]
    if not missing:
        return
    roles = {**(roles or {}), config.target: "target", config.id: "id", config.split: "split",
             **{c: f"ancestor {lvl}" for lvl, c in config.ancestors.items()}}
    roles |= {c: "excluded" for c in config.exclude}
    named = ", ".join(f"{c!r} ({roles.get(c, 'feature')})" for c in missing)
    raise TableSourceError(f"{file}: configured column(s) {named} not in the file; its columns are {header}")


def _columns_of(files: list[Path], fmt: str, config: TableConfig) -> list[str]:
    """The column names shared by every file; files that disagree are named both."""
    first = None
    for file in files:
        _refuse_empty(file)
        columns = _csv_header(file, config) if fmt == "csv" else _parquet_header(file)
        if first is None:
            first = (file, columns)
        elif set(columns) != set(first[1]):
            only_first = sorted(set(first[1]) - set(columns))
            only_here = sorted(set(columns) - set(first[1]))
            raise TableSourceError(
                f"{first[0]} and {file} do not have the same columns: only in the first {only_first}, "
                f"only in the second {only_here}"
            )
    return first[1]


def _refuse_empty(file: Path) -> None:
    if file.stat().st_size == 0:
        raise TableSourceError(f"{file}: the file is empty (0 bytes)")


# ----- CSV


def _csv_header(file: Path, config: TableConfig) -> list[str]:
    try:
        header = list(pd.read_csv(file, sep=config.delimiter, encoding=config.encoding, nrows=0).columns)
    except UnicodeDecodeError:
        raise _encoding_error(file, config.encoding) from None
    except pd.errors.EmptyDataError:
        raise TableSourceError(f"{file}: the file holds no header and no rows (only blank lines)") from None
    except pd.errors.ParserError as error:
        raise TableSourceError(f"{file}: not readable as CSV: {error}") from None
    if len(header) == 1:
        raise _one_column_error(file, header[0], config.delimiter)
    return header


def _one_column_error(file: Path, header: str, delimiter: str) -> TableSourceError:
    """A header that parses as one column: most likely the file uses another delimiter."""
    declared = _DELIMITERS.get(delimiter, repr(delimiter))
    others = [d for d in _DELIMITERS if d != delimiter and d in header]
    if others:
        used = max(others, key=header.count)
        return TableSourceError(
            f"{file}: the header parses as the single column {header!r} with delimiter {declared}, but it "
            f"holds {_DELIMITERS[used]}: the file seems to use {_DELIMITERS[used]}; set data.table.delimiter"
        )
    return TableSourceError(
        f"{file}: the header parses as the single column {header!r} with delimiter {declared}; a table needs "
        f"a target and at least one feature column (check data.table.delimiter)"
    )


def _encoding_error(file: Path, encoding: str) -> TableSourceError:
    offset, line = _first_undecodable(file, encoding)
    where = f"byte {offset} (line {line})" if offset is not None else "a byte"  # offsets count from 0
    return TableSourceError(
        f"{file}: {where} is not valid {encoding}; set data.table.encoding to the file's encoding "
        f"(e.g. latin-1 or cp1252)"
    )


def _first_undecodable(file: Path, encoding: str) -> tuple[int | None, int | None]:
    """Byte offset and 1-based line of the first byte sequence `encoding` cannot decode, a
    sequence cut off at the end of the file included; None, None if every byte decodes."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, line_number = 0, 0
    with open(file, "rb") as handle:
        for line_number, line in enumerate(handle, 1):
            pending = len(decoder.getstate()[0])  # bytes of a sequence begun on the line before
            try:
                decoder.decode(line)
            except UnicodeDecodeError as error:
                return offset - pending + error.start, line_number
            offset += len(line)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as error:
        return offset - len(error.object) + error.start, line_number
    return None, None


def _read_csv(file: Path, wanted: list[str], as_text: list[str], config: TableConfig) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            file, sep=config.delimiter, encoding=config.encoding, usecols=wanted,
            dtype={c: "str" for c in as_text}, low_memory=False,  # one dtype per whole column
        )
    except UnicodeDecodeError:
        raise _encoding_error(file, config.encoding) from None
    except (pd.errors.ParserError, ValueError) as error:
        raise TableSourceError(f"{file}: not readable as CSV: {error}") from None
    return _refuse_no_rows(frame[wanted], file)


# ----- Parquet


def _parquet_header(file: Path) -> list[str]:
    try:
        parquet = pq.ParquetFile(file)
        metadata, names = parquet.metadata, list(parquet.schema_arrow.names)
    except (pa.ArrowException, OSError) as error:
        raise TableSourceError(f"{file}: not a readable Parquet file (truncated or corrupt?): {error}") from None
    if metadata.num_rows == 0:
        raise TableSourceError(f"{file}: the file has columns {names} but no rows")
    return names


def _read_parquet(file: Path, wanted: list[str], as_text: list[str], config: TableConfig) -> pd.DataFrame:
    try:
        table = pq.read_table(file, columns=wanted)
        for position, name in enumerate(table.column_names):
            column = table.column(position)
            if name in as_text or not _is_numeric(column.type):  # labels and categories: strings
                table = table.set_column(position, name, column.cast(pa.string()))
        frame = table.to_pandas()
    except (pa.ArrowException, OSError) as error:
        raise TableSourceError(f"{file}: not a readable Parquet file (truncated or corrupt?): {error}") from None
    return _refuse_no_rows(frame, file)


def _is_numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


# ----- both


def _refuse_no_rows(frame: pd.DataFrame, file: Path) -> pd.DataFrame:
    if frame.empty:
        raise TableSourceError(f"{file}: the file has a header {list(frame.columns)} but no data rows")
    return frame


def _numeric_as_float32(frame: pd.DataFrame, skip: set[str]) -> pd.DataFrame:
    for column in frame.columns:
        if column not in skip and pd.api.types.is_numeric_dtype(frame[column]) and frame[column].dtype != np.float32:
            frame[column] = frame[column].astype(np.float32)
    return frame
