"""What a run reads first, checked before any server or step starts: the data source (a
table's header holds every column the settings name), the taxonomy file, with the classes
each specialist view names in it, and, where the labels read cheaply (an image set's label
files, arrays or class folders; a table's target column), that the taxonomy's classes are the
data's. A mistake in any
is a configuration error, said in a fraction of a second, not after a Prefect server has
started and a step has failed."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from granular.config import Config, ConfigError, path_safe
from granular.core.partition import ORIGINS
from granular.core.taxonomy import TaxonomyError, load_taxonomy
from granular.pipeline.reads import specialist_class_ids
from granular.store.paths import ProjectPaths

_IDX_LABELS = {"train": "train-labels-idx1-ubyte", "test": "t10k-labels-idx1-ubyte"}


def check_inputs(config: Config, paths: ProjectPaths) -> None:
    source = paths.resolve(config.data.source.path, "data.source.path")
    if not source.exists():
        raise ConfigError(f"data.source.path: {config.data.source.path} does not exist (read as {source})")
    if config.data.table is not None:
        _check_table_columns(config, source)
    if config.taxonomy is None:
        return  # a table's taxonomy is derived from its columns when cleaning
    taxonomy = paths.resolve(config.taxonomy, "taxonomy")
    if not taxonomy.is_file():
        raise ConfigError(f"taxonomy: {config.taxonomy} is not a file (read as {taxonomy})")
    try:
        classes = load_taxonomy(taxonomy)
    except (TaxonomyError, ValueError, OSError) as error:
        raise ConfigError(f"taxonomy: {error}") from None
    specialist_class_ids(config, classes)  # each specialist names classes of it
    misfits = _classes_against_labels(config, source, list(classes.fine_names))
    if misfits:
        raise ConfigError(
            f"taxonomy {config.taxonomy} does not fit the classes of {config.data.source.path}: " + "; ".join(misfits)
        )


def _classes_against_labels(config: Config, source: Path, names: list[str]) -> list[str]:
    """What does not fit between the taxonomy's fine classes (a class's position is its label
    id) and the labels of an image set, or the target column of a table of classes."""
    fmt = config.data.source.format
    if config.data.table is not None:
        return _against_target(config, source, names)
    if fmt == "folder":
        return _against_folders(source, names)
    if fmt not in ("idx", "npz"):
        return []
    labels = _idx_labels(source) if fmt == "idx" else _npz_labels(source)
    if labels is None:  # not where the layout says: the import step names what is missing
        return []
    least = config.validate_.least_per_class("images")
    misfits = []
    every = np.concatenate(list(labels.values()))
    for label, count in zip(*np.unique(every[every >= len(names)], return_counts=True)):
        if count >= least:  # a class the taxonomy lacks; fewer examples are stray labels, set aside
            misfits.append(f"label {label} ({count} examples) has no class in it (it has {len(names)}, ids 0..{len(names) - 1})")
    for origin, values in labels.items():
        for label in sorted(set(range(len(names))) - set(values.tolist())):
            misfits.append(f"class {label} ({names[label]}) has no examples in the {origin} split")
    return misfits


# A CSV up to this size is read for its target column before a run (a second or so); beyond,
# its labels are checked when it is cleaned. A Parquet file's column is read alone, at any size.
_CSV_READ_BYTES = 256 * 2**20


def _against_target(config: Config, source: Path, names: list[str]) -> list[str]:
    """A table's target column against the taxonomy's fine classes: a label it lacks on
    validate.min_per_class rows or more (fewer are stray rows, set aside when cleaning), and a
    class no row has."""
    from granular.modalities.tables.source import TableSourceError, read_table, table_files  # a table's only

    table = config.data.table
    if table.task == "regression":
        return []
    try:
        files = table_files(source, config.data.source.format)
        if config.data.source.format == "csv" and sum(f.stat().st_size for f in files) > _CSV_READ_BYTES:
            return []
        labels = read_table(source, config.data.source.format, table, columns=[table.target])[table.target]
    except (TableSourceError, ValueError, OSError):  # the import and clean steps say what is wrong with the files
        return []
    counts = labels.dropna().astype("string").value_counts()
    least = config.validate_.least_per_class("tables")
    misfits = [f"class {label!r} of column {table.target!r} ({count:,} rows) is not in it"
               for label, count in counts.items() if label not in names and count >= least]
    return misfits + [f"class {name!r} has no row in column {table.target!r}" for name in names if name not in counts.index]


def _idx_labels(source: Path) -> dict[str, np.ndarray] | None:
    from granular.modalities.images.idx import IdxError, read_idx

    labels = {}
    for origin, stem in _IDX_LABELS.items():
        found = [source / name for name in (f"{stem}.gz", stem) if (source / name).is_file()]
        if not found:
            return None
        try:
            labels[origin] = read_idx(found[0], dimensions=1).astype(np.int64)
        except IdxError:  # the import step says what is wrong with the file
            return None
    return labels


def _npz_labels(source: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(source, allow_pickle=False) as archive:
            return {origin: np.asarray(archive[f"y_{origin}"]).astype(np.int64).reshape(-1) for origin in ORIGINS}
    except (KeyError, ValueError, OSError):  # the import step says what is wrong with the file
        return None


def _against_folders(source: Path, names: list[str]) -> list[str]:
    """Each split's class folders against the taxonomy's classes (a folder is named after its
    class, or as a path can hold the name: T-shirt/top as T-shirt_top)."""
    label_of = {path_safe(name): label for label, name in enumerate(names)} | {name: label for label, name in enumerate(names)}
    misfits = []
    for origin in ORIGINS:
        if not (source / origin).is_dir():
            return []  # not the layout: the import step names what is missing
        folders = sorted(p.name for p in (source / origin).iterdir() if p.is_dir())
        misfits += [f"folder {origin}/{folder} is no class of it" for folder in folders if folder not in label_of]
        present = {label_of[folder] for folder in folders if folder in label_of}
        misfits += [f"class {label} ({names[label]}) has no folder in {origin}/"
                    for label in range(len(names)) if label not in present]
    return misfits


def _check_table_columns(config: Config, source) -> None:
    from granular.modalities.tables.source import TableSourceError, check_columns  # a table's only

    segments = {
        view.segments.column: f"segment column of view {view.name}"
        for view in config.views.values() if getattr(view.segments, "column", None)
    }
    try:
        check_columns(source, config.data.source.format, config.data.table, also=segments)
    except TableSourceError as error:
        raise ConfigError(f"data.table: {error}") from None
