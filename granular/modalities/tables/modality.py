"""A user's table (CSV or Parquet) through the pipeline: the `Modality` of granular/modalities/base.py.

- clean writes data/interim/clean.npz (granular/modalities/tables/clean_file.py): the fine label
  of every kept row, its row number, and each feature (and segment) column once; the derived
  taxonomy and the schema beside it.
- a view's folder holds row numbers, labels and segment values per split, never a copy of the
  features: every view reads the one clean table and takes its columns.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from granular.config import Config, TableView
from granular.config.feature_groups import expand_group
from granular.core.bins import bins_taxonomy, fine_bins
from granular.core.class_weights import class_weights
from granular.core.partition import SPLITS, TEST, TRAIN, fusion_rows, require_every_class
from granular.core.quarantine import QUARANTINE_ROW_IDS, quarantine_checks
from granular.core.taxonomy import Taxonomy, load_taxonomy
from granular.modalities.base import Baseline, Examples, TrainingData
from granular.modalities.experts import ExpertPlan, ViewModel, single_network
from granular.modalities.tables.clean_file import (
    CATEGORICAL,
    NUMERIC,
    TARGET,
    VOCAB,
    feature_columns,
    load_clean,
    load_schema,
)
from granular.modalities.tables.reader import MODALITY, TableInput, TableReader, route, segment_values
from granular.problems import CLASSES, VALUES, problem_for
from granular.store.atomic import atomic_dir, atomic_path, read_npz, write_json, write_npz
from granular.store.paths import ProjectPaths

GIVEN_SPLIT = "given_split"  # in clean.npz: each row's split from data.table.split
BASELINE = "hgb"  # the boosted-trees baseline (granular/modalities/tables/trees.py), by name
IMPORTANCE_ROWS = 5_000  # test rows a permutation importance reads: enough to rank the columns


class TableStepError(ValueError):
    """The table does not fit the configured views; the message names the view and column."""


def _taxonomy_document(taxonomy: Taxonomy) -> dict:
    return {
        "levels": list(taxonomy.levels),
        "classes": [
            {level: taxonomy.names[level][taxonomy.parent[level][fine]] for level in taxonomy.levels}
            for fine in range(len(taxonomy.fine_names))
        ],
    }


def _check_segment_columns(config: Config, schema: dict) -> None:
    """A view is segmented by a categorical feature column: its values name the experts."""
    for spec in config.views.values():
        column = spec.segments.column if spec.segments else None
        if column is not None and schema["columns"].get(column, {}).get("type") != "categorical":
            raise TableStepError(
                f"view {spec.name}: segments.column {column!r} must be a categorical feature column "
                f"(declare it in data.table.types if it holds numbers); features: {feature_columns(schema)}"
            )


# A target of numbers with more distinct values than this is a quantity, not a label.
MAX_NUMERIC_CLASSES = 50


def _check_target_is_a_label(target: pd.Series, column: str) -> None:
    """A classification's target column of numbers with a fraction, or with more than
    MAX_NUMERIC_CLASSES distinct values, is refused before anything trains (it would become that
    many classes, most with a row or two): it is a quantity, for data.table.task: regression."""
    values = target.dropna()
    numbers = pd.to_numeric(values, errors="coerce")
    if len(values) == 0 or numbers.isna().any():
        return  # text labels (or no labels: validation names that)
    distinct = numbers.nunique()
    fraction = bool((numbers != numbers.round()).any())
    if fraction or distinct > MAX_NUMERIC_CLASSES:
        why = "numbers with a fraction" if fraction else f"{distinct:,} distinct whole numbers"
        raise TableStepError(
            f"data.table.target: column {column!r} holds {why}, a quantity to predict (regression): set "
            "data.table.task: regression to predict the number (with data.table.bins for coarser levels), "
            f"or give a column of class labels as the target"
        )


def _as_read(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows as read from a file: text, and float64 (a served model's signature then takes float32 too)."""
    frame = frame.reset_index(drop=True)
    return frame.astype({
        c: "string" if isinstance(frame[c].dtype, pd.CategoricalDtype) else "float64" for c in frame.columns
    })


def view_columns(config: Config, view: TableView, schema: dict) -> list[str]:
    """Every feature column, or the view's group expanded against them (names and globs)."""
    if view.features == "all":
        return feature_columns(schema)
    return expand_group(view.features, config.data.table.feature_groups[view.features], feature_columns(schema))


COLUMNS_FILE = "columns.json"


def read_columns(config: Config, view: TableView, schema: dict, table: pd.DataFrame) -> dict[str, Any]:
    """The clean table's columns a view's training reads (its features, every feature the encoder
    is fitted on, its segment column): their names, their schema entries and a digest of their values."""
    names = list(dict.fromkeys([*view_columns(config, view, schema), *feature_columns(schema),
                                *([view.segments.column] if view.segments else [])]))
    values = pd.util.hash_pandas_object(table[names], index=False).to_numpy()
    return {
        "columns": {name: schema["columns"].get(name) for name in names},
        "md5": hashlib.md5(values.tobytes()).hexdigest(),
    }


def _expert_values(view: TableView, segments: dict[str, np.ndarray]) -> list[str]:
    """Segment values frequent enough for an expert: min_size training rows and a validation row."""
    if not view.segments:
        return []
    values, counts = np.unique(segments["train"], return_counts=True)
    return [str(v) for v, n in zip(values, counts) if n >= view.segments.min_size and (segments["val"] == v).any()]


class Tables:
    name = MODALITY
    fuses_out_of_fold = True

    def import_raw(self, config: Config, paths: ProjectPaths) -> list[Path]:
        """Copy the table file, or every table file of a folder, byte for byte into data/raw/."""
        from granular.modalities.tables.source import table_files

        files = table_files(paths.resolve(config.data.source.path, "data.source.path"), config.data.source.format)
        with atomic_dir(paths.raw) as staging:
            for file in files:
                shutil.copy2(file, staging / file.name)
        return sorted(paths.raw.iterdir())

    def clean(self, config: Config, paths: ProjectPaths) -> dict:
        """Read the imported table, set faulty rows aside with their reason in data/quarantine/,
        and write the kept rows as clean.npz, with the schema and taxonomy they were read with."""
        from granular.modalities.tables.clean import clean_table, given_splits
        from granular.modalities.tables.schema import infer_schema
        from granular.modalities.tables.source import read_table

        table = config.data.table
        target = table_target(config)
        frame = read_table(paths.raw, config.data.source.format, table)
        target.check(frame[table.target], table.target)
        schema = infer_schema(frame, table)
        _check_segment_columns(config, schema)
        given = load_taxonomy(paths.taxonomy(config.taxonomy)) if config.taxonomy else None
        level_names = {given.fine: list(given.fine_names)} if given else None
        result = clean_table(frame, table, schema, level_names)
        kept = result.kept
        if config.data.limit is not None and len(kept) > config.data.limit:
            kept = kept.sample(n=config.data.limit, random_state=config.data.limit_seed).sort_index()
        taxonomy = target.taxonomy(kept, table, given)
        with atomic_dir(paths.quarantine) as staging:
            result.rejected.to_csv(staging / "rejected.csv", index=False)
        arrays = {
            "origin": np.zeros(len(kept), dtype=np.int8),
            "index": kept.index.to_numpy(dtype=np.int64),
        }
        arrays |= target.encode(kept, table, taxonomy)
        if table.split:  # each row's given split, as its number in SPLITS
            arrays[GIVEN_SPLIT] = given_splits(kept[table.split]).map(SPLITS.index).to_numpy(dtype=np.int8)
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

    def validate(self, config: Config, paths: ProjectPaths, docs_dir: Path):
        """GX on the clean table (rows present, every label a class of the taxonomy, every feature
        column there) and on its class counts (each at least validate.min_per_class, 10 unless
        set); drift of
        the schema from the accepted one is reported beside."""
        import great_expectations.expectations as gxe  # ~6 s to import: only when validating

        from granular.core.validation import validate_tables
        from granular.modalities.tables.schema import schema_drift

        taxonomy = load_taxonomy(paths.taxonomy(config.taxonomy))
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
            "class_counts": [gxe.ExpectColumnValuesToBeBetween(column="count", min_value=config.validate_.least_per_class(MODALITY))],
        }
        source = f"{paths.clean.relative_to(paths.root)} (cleaned from the table(s) in {paths.raw.relative_to(paths.root)})"
        set_aside, checks = quarantine_checks(
            json.loads(paths.clean_report.read_text()), config.validate_.least_per_class(MODALITY),
            config.validate_.max_quarantined_share,
        ) if paths.clean_report.is_file() else ({}, {})
        validation = validate_tables(
            {"rows": rows, "class_counts": counts, **set_aside}, expectations | checks, source, docs_dir,
            may_be_missing=frozenset(feature_columns(schema)),  # imputed from the training rows
            row_ids={"rows": ("row",), "class_counts": ("label",), **QUARANTINE_ROW_IDS},
        )
        if paths.accepted_schema.exists():
            validation.report["schema_drift"] = schema_drift(load_schema(paths.accepted_schema), schema)
        else:  # the first table validated sets what later tables are compared with
            write_json(paths.accepted_schema, schema)
            validation.report["schema_drift"] = []
        return validation

    def examples(self, config: Config, paths: ProjectPaths) -> Examples:
        """A table's data.table.split column gives each row's split (its test rows are the
        official test split, its val rows the validation split); without one, a table has no
        official test split: data.table.test_fraction of each class is held out as one (its
        origin), and the rest is split train/val as for images."""
        labels = load_clean(paths).labels
        if config.data.table.split:
            given = read_npz(paths.clean)[GIVEN_SPLIT]
            origin = np.where(given == SPLITS.index("test"), TEST, TRAIN).astype(np.int8)
            return Examples(labels=labels, origin=origin, index=np.arange(len(labels), dtype=np.int64),
                            given_val=given == SPLITS.index("val"))
        rng = np.random.default_rng([config.split.seed, 1])  # its own stream: the val split stays as it was
        origin = np.zeros(len(labels), dtype=np.int8)
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            origin[members[: int(round(len(members) * config.data.table.test_fraction))]] = TEST
        return Examples(labels=labels, origin=origin, index=np.arange(len(labels), dtype=np.int64))

    def view_arrays(
        self, config: Config, paths: ProjectPaths, view: TableView, taxonomy: Taxonomy, staging: Path
    ) -> dict[str, dict[str, np.ndarray]]:
        """A view's rows, labels and segment values per split: references into the clean table.
        Beside them, what the training will read of that table (COLUMNS_FILE), so that a renamed,
        retyped or changed column changes the view's files, and what trains on them retrains."""
        splits = read_npz(paths.splits)
        clean = load_clean(paths)
        table = clean.frame
        y = VIEW_TARGETS[problem_for(config).view_problem(config, view)](view, taxonomy, clean, splits)
        write_json(staging / COLUMNS_FILE, read_columns(config, view, load_schema(paths.table_schema), table))
        segment = None
        if view.segments:
            segment = segment_values(table[view.segments.column]).to_numpy(dtype=str)
        out = {}
        for code, split_name in enumerate(SPLITS):
            rows = np.flatnonzero(splits["split"] == code)
            out[split_name] = {"rows": rows, "y": y[rows], "origin": splits["origin"][rows], "index": splits["index"][rows]}
            if segment is not None:
                out[split_name]["segment"] = segment[rows]
        return out

    def networks_in_view(self, config: Config, paths: ProjectPaths, view: TableView) -> int:
        """The global network and an expert per frequent segment value."""
        if not view.segments:
            return 1
        segments = {s: read_npz(paths.view_split(view.name, s))["segment"] for s in ("train", "val")}
        return 1 + len(_expert_values(view, segments))

    def training_data(self, config: Config, paths: ProjectPaths, view: TableView, taxonomy: Taxonomy, warn) -> TrainingData:
        """The view's columns encoded by an encoder fitted on the training rows; network 0 is the
        global network on every row, network k the expert of the k-th frequent segment value."""
        from granular.modalities.tables.features import FeatureEncoder

        schema = load_schema(paths.table_schema)
        table = load_clean(paths)
        splits = {s: read_npz(paths.view_split(view.name, s)) for s in SPLITS}
        columns = view_columns(config, view, schema)
        encoder = FeatureEncoder().fit(table.frame.iloc[splits["train"]["rows"]], schema)
        for line in encoder.warnings_:
            warn(f"view {view.name}: {line}")
        x = {s: encoder.transform(table.frame.iloc[a["rows"]], columns) for s, a in splits.items()}
        y = {s: a["y"] for s, a in splits.items()}
        if not view.segments:
            plan = single_network({s: len(a["y"]) for s, a in splits.items()})
            return TrainingData(x=x, y=y, plan=plan, reader=TableReader(columns=columns, encoder=encoder))
        expert_values = _expert_values(view, {s: a["segment"] for s, a in splits.items()})
        plan = ExpertPlan(
            route={s: route(pd.Series(a["segment"]), expert_values) for s, a in splits.items()},
            tags=[{"segment": "global"}, *({"segment": value} for value in expert_values)],
            fallback=True,
        )
        reader = TableReader(columns=columns, encoder=encoder, segment_column=view.segments.column,
                             expert_values=tuple(expert_values))
        return TrainingData(x=x, y=y, plan=plan, reader=reader)

    def student_reader(self, config: Config, paths: ProjectPaths) -> TableReader:
        raise ValueError("distill.enabled: the student network is for images; set it to false for a table")

    def raw_inputs(
        self, config: Config, paths: ProjectPaths, splits: tuple[str, ...], count: int | None = None
    ) -> dict[str, pd.DataFrame]:
        """The feature columns of the first `count` rows of each split."""
        split = read_npz(paths.splits)["split"]
        table = load_clean(paths).frame
        return {name: _as_read(table.iloc[np.flatnonzero(split == SPLITS.index(name))[:count]]) for name in splits}

    def input_spec(self, config: Config, paths: ProjectPaths) -> TableInput:
        return TableInput(columns=feature_columns(load_schema(paths.table_schema)))

    def load_input_spec(self, spec: dict[str, Any]) -> TableInput:
        return TableInput(columns=spec["columns"])

    def load_reader(self, folder: Path, spec: dict[str, Any]) -> TableReader:
        return TableReader.load(folder, spec)

    def baselines(self, config: Config, paths: ProjectPaths) -> dict[str, Baseline]:
        """Gradient-boosted trees (the `trees` settings) on the same splits and every feature
        column, fitted where the networks were (train, with val for early stopping; out of fold
        again on each fold, as the views): a model that serves, so the fusion takes it as one
        more input; and the problem's floor (the majority class, the mean value of the training
        rows) for every row."""
        from granular.modalities.tables.features import FeatureEncoder

        schema = load_schema(paths.table_schema)
        table = load_clean(paths)
        splits = read_npz(paths.splits)
        rows = {name: np.flatnonzero(splits["split"] == code) for code, name in enumerate(SPLITS)}
        rows["fusion"] = fusion_rows(splits["split"], splits["fold"])
        columns = feature_columns(schema)
        encoder = FeatureEncoder().fit(table.frame.iloc[rows["train"]], schema)
        arrays = {s: encoder.transform(table.frame.iloc[r], columns) for s, r in rows.items()}
        taxonomy = load_taxonomy(paths.taxonomy(config.taxonomy))
        reader = TableReader(columns=columns, encoder=encoder)
        problem, target = problem_for(config), table_target(config)
        targets = {s: target.of_rows(table, splits, r) for s, r in rows.items()}
        trees = target.fit_trees(config, taxonomy, arrays, targets)
        fold = splits["fold"][rows["fusion"]]
        seconds = trees.fit_seconds
        fusion_outputs = trees.outputs(arrays["val"])
        if len(rows["fusion"]) > len(rows["val"]):  # out of fold: trees fitted on each fold's complement answer it
            fusion_outputs = np.zeros((len(fold), fusion_outputs.shape[1]), fusion_outputs.dtype)
            for f in range(int(fold.max()) + 1):
                held = fold == f
                fold_trees = target.fit_trees(
                    config, taxonomy, {"train": arrays["fusion"][~held], "val": arrays["fusion"][held]},
                    {"train": targets["fusion"][~held], "val": targets["fusion"][held]},
                )
                fusion_outputs[held] = fold_trees.outputs(arrays["fusion"][held])
                seconds += fold_trees.fit_seconds
        sizes = {"fusion": len(fold), "test": len(rows["test"])}
        floor = problem.floor_outputs(targets["train"], sizes, len(taxonomy.fine_names))
        return {
            BASELINE: Baseline(
                fusion_outputs=fusion_outputs, test_outputs=trees.outputs(arrays["test"]),
                figures={"train_seconds": seconds}, model=ViewModel(level=taxonomy.fine, reader=reader, networks=[trees]),
            ),
            problem.floor: Baseline(fusion_outputs=floor["fusion"], test_outputs=floor["test"]),
        }

    def importance_rows(self, config: Config, paths: ProjectPaths) -> tuple[pd.DataFrame, np.ndarray]:
        """The first IMPORTANCE_ROWS test rows, as a model is given them, and their fine labels
        (a regression target's values)."""
        splits = read_npz(paths.splits)
        rows = np.flatnonzero(splits["split"] == SPLITS.index("test"))[:IMPORTANCE_ROWS]
        clean = load_clean(paths)
        truth = table_target(config).of_rows(clean, splits, slice(None))
        return _as_read(clean.frame.iloc[rows]), truth[rows]


class _ClassTarget:
    """A target column of class labels: the classes it spells (or the given taxonomy's)."""

    def check(self, target: pd.Series, column: str) -> None:
        _check_target_is_a_label(target, column)

    def taxonomy(self, kept: pd.DataFrame, table, given: Taxonomy | None) -> Taxonomy:
        from granular.modalities.tables.clean import taxonomy_from_columns

        return given or taxonomy_from_columns(kept, table)

    def encode(self, kept: pd.DataFrame, table, taxonomy: Taxonomy) -> dict[str, np.ndarray]:
        """clean.npz's fine label of each kept row."""
        return {"label": pd.Categorical(kept[table.target].astype("string"), categories=taxonomy.fine_names).codes.astype(np.int64)}

    def of_rows(self, clean, splits: dict[str, np.ndarray], rows) -> np.ndarray:
        """The fine labels of `rows` (of splits.npz, in clean order)."""
        return splits["label"][rows]

    def fit_trees(self, config: Config, taxonomy: Taxonomy, arrays: dict, targets: dict[str, np.ndarray]):
        from granular.modalities.tables.trees import fit_trees

        return fit_trees(
            arrays["train"], targets["train"], arrays["val"], targets["val"], len(taxonomy.fine_names), config.trees,
            seed=config.train.seed, threads=config.train.threads,
            class_weights=class_weights(config.trees.class_weight, targets["train"], taxonomy, taxonomy.fine),
        )


class _ValueTarget:
    """A target column of numbers: its levels are bins of the value (data.table.bins)."""

    def check(self, target: pd.Series, column: str) -> None:
        """Each row's number is checked when the table is cleaned."""

    def taxonomy(self, kept: pd.DataFrame, table, given: Taxonomy | None) -> Taxonomy:
        return bins_taxonomy(table.bins)

    def encode(self, kept: pd.DataFrame, table, taxonomy: Taxonomy) -> dict[str, np.ndarray]:
        """clean.npz's value of each kept row, and its finest bin as the fine "label" the split stratifies by."""
        values = kept[table.target].to_numpy(dtype=np.float64)
        return {TARGET: values, "label": fine_bins(values, table.bins)}

    def of_rows(self, clean, splits: dict[str, np.ndarray], rows) -> np.ndarray:
        """The values of `rows` (of splits.npz, in clean order)."""
        return clean.target[rows]

    def fit_trees(self, config: Config, taxonomy: Taxonomy, arrays: dict, targets: dict[str, np.ndarray]):
        from granular.modalities.tables.trees import fit_regression_trees

        return fit_regression_trees(
            arrays["train"], targets["train"], arrays["val"], targets["val"], config.trees, seed=config.train.seed,
            threads=config.train.threads,
        )


TABLE_TARGETS = {CLASSES: _ClassTarget(), VALUES: _ValueTarget()}  # the target column as each problem reads it


def _view_classes(view: TableView, taxonomy: Taxonomy, clean, splits: dict[str, np.ndarray]) -> np.ndarray:
    """Each row's class at the view's level; every class is in every split."""
    y = taxonomy.map_labels(splits["label"], view.level)
    require_every_class(y, splits["split"], taxonomy.names[view.level], f"view {view.name}")
    return y


def _view_values(view: TableView, taxonomy: Taxonomy, clean, splits: dict[str, np.ndarray]) -> np.ndarray:
    """The target's value, row by row (splits.npz is in clean order)."""
    return clean.target


# What a view learns of each row, by the problem it solves (a regression's binned view learns classes).
VIEW_TARGETS = {CLASSES: _view_classes, VALUES: _view_values}


def table_target(config: Config) -> _ClassTarget | _ValueTarget:
    return TABLE_TARGETS[problem_for(config)]


TABLES = Tables()
