"""The pipeline's steps for a table (CSV or Parquet): the same files as for images, so the same
DVC stages and Prefect tasks run them; granular/steps.py hands a table's steps to these.

- clean writes data/interim/clean.npz: the fine label of every kept row, its row number, and
  each feature (and segment) column once, numeric as float32, categorical as codes into the
  column's sorted values; the derived taxonomy and the schema beside it.
- a view's folder holds row numbers, labels and segments per split, never a copy of features:
  every view reads the one clean table and takes its columns.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from granular import partition
from granular.atomic import atomic_dir, atomic_path, read_npz, write_json, write_npz
from granular.config import Config, ViewConfig
from granular.paths import ProjectPaths
from granular.sources import TEST
from granular.segments import segment_values
from granular.taxonomy import Taxonomy, load_taxonomy

NUMERIC, CATEGORICAL, VOCAB = "num.", "cat.", "vocab."


@dataclass(frozen=True)
class CleanTable:
    frame: pd.DataFrame  # feature and segment columns; categoricals as pandas categories
    labels: np.ndarray  # (N,) fine label ids
    index: np.ndarray  # (N,) row number in the imported table(s): the example's id


def taxonomy_path(config: Config, paths: ProjectPaths) -> Path:
    """The configured taxonomy file, or the one cleaning derived from the label columns."""
    return paths.resolve(config.taxonomy, "taxonomy") if config.taxonomy else paths.derived_taxonomy


def _taxonomy_document(taxonomy: Taxonomy) -> dict:
    return {
        "levels": list(taxonomy.levels),
        "classes": [
            {level: taxonomy.names[level][taxonomy.parent[level][fine]] for level in taxonomy.levels}
            for fine in range(len(taxonomy.fine_names))
        ],
    }


def import_raw(config: Config, paths: ProjectPaths) -> list[Path]:
    """Copy the table file, or every table file of a folder, byte for byte into data/raw/."""
    from granular.table_source import table_files

    files = table_files(paths.resolve(config.data.source.path, "data.source.path"), config.data.source.format)
    with atomic_dir(paths.raw) as staging:
        for file in files:
            shutil.copy2(file, staging / file.name)
    return sorted(paths.raw.iterdir())


class TableStepError(ValueError):
    """The table does not fit the configured views; the message names the view and column."""


def feature_columns(schema: dict) -> list[str]:
    return list(schema["columns"])


def load_schema(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _check_segment_columns(config: Config, schema: dict) -> None:
    """A view is segmented by a categorical feature column: its values name the experts."""
    for spec in config.views.values():
        column = spec.segments.column if spec.segments else None
        if column is not None and schema["columns"].get(column, {}).get("type") != "categorical":
            raise TableStepError(
                f"view {spec.name}: segments.column {column!r} must be a categorical feature column "
                f"(declare it in data.table.types if it holds numbers); features: {feature_columns(schema)}"
            )


def clean(config: Config, paths: ProjectPaths) -> dict:
    """Read the imported table, set faulty rows aside with their reason in data/quarantine/,
    and write the kept rows as clean.npz, with the schema and taxonomy they were read with."""
    from granular.table_clean import clean_table, taxonomy_from_columns
    from granular.table_schema import infer_schema
    from granular.table_source import read_table

    table = config.data.table
    frame = read_table(paths.raw, config.data.source.format, table)
    schema = infer_schema(frame, table)
    _check_segment_columns(config, schema)
    given = load_taxonomy(taxonomy_path(config, paths)) if config.taxonomy else None
    level_names = {given.fine: list(given.fine_names)} if given else None
    result = clean_table(frame, table, schema, level_names)
    kept = result.kept
    if config.data.limit is not None and len(kept) > config.data.limit:
        kept = kept.sample(n=config.data.limit, random_state=config.data.limit_seed).sort_index()
    taxonomy = given or taxonomy_from_columns(kept, table)
    with atomic_dir(paths.quarantine) as staging:
        result.rejected.to_csv(staging / "rejected.csv", index=False)
    arrays = {
        "label": pd.Categorical(kept[table.target].astype("string"), categories=taxonomy.fine_names).codes.astype(np.int64),
        "origin": np.zeros(len(kept), dtype=np.int8),
        "index": kept.index.to_numpy(dtype=np.int64),
    }
    for column in feature_columns(schema):
        if schema["columns"][column]["type"] == "numeric":
            arrays[NUMERIC + column] = pd.to_numeric(kept[column], errors="coerce").to_numpy(dtype=np.float32)
        else:
            codes, values = pd.factorize(kept[column].astype("string"), sort=True)
            arrays[CATEGORICAL + column] = codes.astype(np.int32)
            arrays[VOCAB + column] = np.asarray(values, dtype=str)
    write_npz(paths.clean, **arrays)
    write_json(paths.table_schema, schema)
    with atomic_path(paths.derived_taxonomy) as tmp:
        tmp.write_text(yaml.safe_dump(_taxonomy_document(taxonomy), sort_keys=False, allow_unicode=True))
    report = {**result.report, "kept": int(len(kept)), "subsampled_out": int(len(result.kept) - len(kept))}
    write_json(paths.clean_report, report)
    return report


def validate(config: Config, paths: ProjectPaths, docs_dir: Path):
    """GX on the clean table (rows present, every label a class of the taxonomy, every feature
    column there) and on its class counts (each at least
    validate.min_per_class); drift of the schema from the accepted one is reported beside."""
    import great_expectations.expectations as gxe  # ~6 s to import: only when validating

    from granular.table_schema import schema_drift
    from granular.validate import validate_tables

    taxonomy = load_taxonomy(taxonomy_path(config, paths))
    table = load_clean(paths)
    schema = load_schema(paths.table_schema)
    names = list(taxonomy.fine_names)
    rows = table.frame.assign(row=table.index, label=np.asarray(names, dtype=object)[table.labels])
    counts = pd.DataFrame({"label": names, "count": np.bincount(table.labels, minlength=len(names))})
    expectations = {
        "rows": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=names),
            # Missing feature values are imputed when training: only presence is expected here.
            *[gxe.ExpectColumnToExist(column=c) for c in feature_columns(schema)],
        ],
        "class_counts": [gxe.ExpectColumnValuesToBeBetween(column="count", min_value=config.validate_.min_per_class)],
    }
    source = f"{paths.clean.relative_to(paths.root)} (cleaned from the table(s) in {paths.raw.relative_to(paths.root)})"
    validation = validate_tables(
        {"rows": rows, "class_counts": counts}, expectations, source, docs_dir,
        may_be_missing=frozenset(feature_columns(schema)),  # imputed from the training rows
    )
    if paths.accepted_schema.exists():
        validation.report["schema_drift"] = schema_drift(load_schema(paths.accepted_schema), schema)
    else:  # the first table validated sets what later tables are compared with
        write_json(paths.accepted_schema, schema)
        validation.report["schema_drift"] = []
    return validation


def load_clean(paths: ProjectPaths) -> CleanTable:
    arrays = read_npz(paths.clean)
    columns = {}
    for key, values in arrays.items():
        if key.startswith(NUMERIC):
            columns[key.removeprefix(NUMERIC)] = values
        elif key.startswith(CATEGORICAL):
            name = key.removeprefix(CATEGORICAL)
            columns[name] = pd.Categorical.from_codes(values, categories=arrays[VOCAB + name])
    return CleanTable(frame=pd.DataFrame(columns), labels=arrays["label"], index=arrays["index"])


def split(config: Config, paths: ProjectPaths, taxonomy: Taxonomy) -> dict:
    """Hold out data.table.test_fraction of each class as the test split, then split the rest
    into train/val as for images; the same rows for every view."""
    labels = load_clean(paths).labels
    rng = np.random.default_rng([config.split.seed, 1])  # its own stream: the val split stays as it was
    origin = np.zeros(len(labels), dtype=np.int8)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        origin[members[: int(round(len(members) * config.data.table.test_fraction))]] = TEST
    split_code = partition.assign_splits(labels, origin, config.split.val_fraction, config.split.seed)
    partition.check_every_class_in_every_split(labels, split_code, taxonomy)
    fold = partition.assign_folds(labels, split_code, config.split.folds, config.split.seed)
    write_npz(paths.splits, origin=origin, index=np.arange(len(labels), dtype=np.int64), label=labels,
              split=split_code, fold=fold)
    return {name: int((split_code == code).sum()) for code, name in enumerate(partition.SPLITS)}


def view(config: Config, paths: ProjectPaths, view_name: str, taxonomy: Taxonomy) -> dict:
    """A view's rows, labels and segment values per split: references into the clean table."""
    from granular.steps import file_digest

    spec = config.view(view_name)
    splits = read_npz(paths.splits)
    y = taxonomy.map_labels(splits["label"], spec.level)
    partition.require_every_class(y, splits["split"], taxonomy.names[spec.level], f"view {view_name}")
    segment = None
    if spec.segments:
        segment = segment_values(load_clean(paths).frame[spec.segments.column]).to_numpy(dtype=str)
    hashes = {}
    with atomic_dir(paths.view_dir(view_name)) as staging:
        for code, split_name in enumerate(partition.SPLITS):
            rows = np.flatnonzero(splits["split"] == code)
            arrays = {"rows": rows, "y": y[rows], "origin": splits["origin"][rows], "index": splits["index"][rows]}
            if segment is not None:
                arrays["segment"] = segment[rows]
            target = staging / paths.view_split(view_name, split_name).name
            write_npz(target, **arrays)
            hashes[split_name] = {"md5": file_digest(target), "n": int(len(rows))}
    return hashes


def view_columns(config: Config, spec: ViewConfig, schema: dict) -> list[str]:
    return feature_columns(schema) if spec.features == "all" else list(config.data.table.feature_groups[spec.features])


def _experts_of(spec: ViewConfig, segments: dict[str, np.ndarray]) -> list[str]:
    """Segment values frequent enough for an expert: min_size training rows and a validation row."""
    if not spec.segments:
        return []
    values, counts = np.unique(segments["train"], return_counts=True)
    return [str(v) for v, n in zip(values, counts) if n >= spec.segments.min_size and (segments["val"] == v).any()]


def networks_in_view(config: Config, paths: ProjectPaths, view_name: str) -> int:
    """How many networks a view trains: its global one and an expert per frequent segment value."""
    spec = config.view(view_name)
    if not spec.segments:
        return 1
    segments = {s: read_npz(paths.view_split(view_name, s))["segment"] for s in ("train", "val")}
    return 1 + len(_experts_of(spec, segments))


def train(config: Config, paths: ProjectPaths, view_name: str, runtime, on_epoch=None, warn=print) -> dict:
    """Fit the feature encoder on the training rows; train the view's global network and one
    expert per frequent segment value; write the model and its val/test probabilities."""
    from granular import plots, train as training
    from granular.features import FeatureEncoder
    from granular.table_model import route, save_table_view_model

    spec = config.view(view_name)
    taxonomy = load_taxonomy(taxonomy_path(config, paths))
    schema = load_schema(paths.table_schema)
    table = load_clean(paths)
    splits = {s: read_npz(paths.view_split(view_name, s)) for s in partition.SPLITS}
    columns = view_columns(config, spec, schema)
    encoder = FeatureEncoder().fit(table.frame.iloc[splits["train"]["rows"]], schema)
    for line in encoder.warnings_:
        warn(f"view {view_name}: {line}")
    arrays = {s: encoder.transform(table.frame.iloc[splits[s]["rows"]], columns) for s in partition.SPLITS}
    segments = {s: splits[s].get("segment") for s in partition.SPLITS}
    expert_values = _experts_of(spec, segments)
    routed = {  # 0: the global network; k: the expert of expert_values[k - 1]
        s: route(pd.Series(segments[s]), expert_values) if spec.segments else np.zeros(len(splits[s]["y"]), np.int64)
        for s in partition.SPLITS
    }
    train_config = config.train_config(spec)
    num_classes = taxonomy.num_classes(spec.level)
    history, models = [], []
    started = time.perf_counter()
    for number in range(len(expert_values) + 1):  # 0: the global network, on every row
        rows = {s: np.ones(len(routed[s]), bool) if number == 0 else routed[s] == number for s in ("train", "val")}
        tag = {"segment": expert_values[number - 1]} if number else ({"segment": "global"} if spec.segments else {})

        def record_epoch(record: dict, tag: dict = tag) -> None:
            history.append({**tag, **record})
            if on_epoch is not None:
                on_epoch(history[-1])

        model_config = train_config.model_copy(update={"seed": train_config.seed + number})
        model = training.fit(
            arrays["train"][rows["train"]], splits["train"]["y"][rows["train"]],
            arrays["val"][rows["val"]], splits["val"]["y"][rows["val"]], num_classes=num_classes,
            config=model_config, runtime=runtime, on_epoch=record_epoch,
            checkpoint_dir=paths.checkpoints(view_name) / (f"segment-{number}" if number else "model"), warn=warn,
        )
        model.meta = {"view": spec.model_dump(), "train_config": model_config.model_dump(),
                      "class_names": list(taxonomy.names[spec.level]), **tag}
        models.append(model)
    seconds = time.perf_counter() - started
    proba = {s: training.predict_routed(models, routed[s], arrays[s], runtime) for s in ("val", "test")}
    with atomic_dir(paths.model_dir(view_name)) as staging:
        segment_column = spec.segments.column if spec.segments else None
        save_table_view_model(staging, spec.level, columns, encoder, models, segment_column, expert_values)
        write_npz(staging / "predictions.npz", val_proba=proba["val"], test_proba=proba["test"])
        write_json(staging / "history.json", history)
        plots.save_learning_curves_png(staging / "learning_curves.png", history, title=view_name)
    shutil.rmtree(paths.checkpoints(view_name), ignore_errors=True)
    return {
        "view": view_name, "device": runtime.name, "train_seconds": seconds, "history": history,
        "experts": expert_values,
        "val_accuracy": float((proba["val"].argmax(1) == splits["val"]["y"]).mean()),
    }


BASELINE = "hgb"  # scikit-learn's HistGradientBoostingClassifier: the comparison table's baseline


def baseline(config: Config, paths: ProjectPaths) -> dict:
    """Gradient-boosted trees on the same splits and every feature column, fitted where the
    networks were (train, with val for early stopping): its fit time and test probabilities."""
    from granular.baseline import fit_baseline
    from granular.features import FeatureEncoder
    schema = load_schema(paths.table_schema)
    table = load_clean(paths)
    splits = read_npz(paths.splits)
    rows = {name: np.flatnonzero(splits["split"] == code) for code, name in enumerate(partition.SPLITS)}
    encoder = FeatureEncoder().fit(table.frame.iloc[rows["train"]], schema)
    arrays = {s: encoder.transform(table.frame.iloc[r], feature_columns(schema)) for s, r in rows.items()}
    labels = {s: splits["label"][r] for s, r in rows.items()}
    num_classes = len(load_taxonomy(taxonomy_path(config, paths)).fine_names)
    model = fit_baseline(
        arrays["train"], labels["train"], arrays["val"], labels["val"], num_classes, seed=config.train.seed,
        threads=config.train.threads,
    )
    return {"fit_seconds": model.fit_seconds, "test_proba": model.predict_proba(arrays["test"])}


def test_rows(config: Config, paths: ProjectPaths, count: int | None = None) -> pd.DataFrame:
    """The first `count` test rows' feature columns, as a model is given them to predict."""
    test = np.flatnonzero(read_npz(paths.splits)["split"] == partition.TEST_SPLIT)[:count]
    frame = load_clean(paths).frame.iloc[test].reset_index(drop=True)
    # As read from a file: text, and float64 (a served model's signature then takes float32 too).
    return frame.astype({
        c: "string" if isinstance(frame[c].dtype, pd.CategoricalDtype) else "float64" for c in frame.columns
    })
