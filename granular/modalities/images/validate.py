"""The expectations on clean images: one row per example (label, origin, shape, channels, pixel
range of each channel) and the count of each class in each official split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from granular.config import ValidateConfig
from granular.core.partition import ORIGINS
from granular.core.quarantine import QUARANTINE_ROW_IDS, quarantine_checks
from granular.core.validation import Validation, validate_tables
from granular.modalities.images.sources import RawDataset
from granular.store.image_file import blocks_of

EXAMPLE_COLUMNS = ["origin", "index", "label", "height", "width", "channels"]
CHANNEL_NAMES = {1: [""], 3: ["_red", "_green", "_blue"]}  # suffixes of each channel's pixel range
# The columns that name a row of each table in a failure: an image is origin/index.
ROW_IDS = {"examples": ("origin", "index"), "class_counts": ("origin", "label", "class")}


def _range_columns(channels: int) -> list[str]:
    return [f"pixel_{end}{name}" for name in CHANNEL_NAMES[channels] for end in ("min", "max")]


def example_table(data: RawDataset) -> pd.DataFrame:
    """One row per example: what the expectations look at."""
    n = len(data)
    height, width = data.images.shape[1:3] if data.images.ndim in (3, 4) else (0, 0)
    channels = 1 if data.images.ndim == 3 else data.images.shape[-1]
    lowest, highest = np.zeros((n, channels)), np.zeros((n, channels))
    for start, block in blocks_of(data.images):  # a set on disk, a block of rows at a time
        per_channel = block.reshape(len(block), -1, channels)
        lowest[start : start + len(block)] = per_channel.min(axis=1)
        highest[start : start + len(block)] = per_channel.max(axis=1)
    ranges = {}
    for channel, name in enumerate(CHANNEL_NAMES[channels]):
        ranges[f"pixel_min{name}"], ranges[f"pixel_max{name}"] = lowest[:, channel], highest[:, channel]
    return pd.DataFrame(
        {
            "origin": np.asarray(ORIGINS)[data.origin] if n else np.array([], dtype=str),
            "index": data.index,
            "label": data.labels,
            "height": np.full(n, height),
            "width": np.full(n, width),
            "channels": np.full(n, channels),
            **ranges,
        }
    )


def class_count_table(data: RawDataset, num_classes: int, class_names: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Examples per (official split, class), zeros included, so a missing class shows up (by
    its name too, where given)."""
    rows = []
    for code, origin in enumerate(ORIGINS):
        labels = data.labels[(data.origin == code) & (data.labels >= 0) & (data.labels < num_classes)]
        counts = np.bincount(labels, minlength=num_classes)  # out-of-set labels fail their own check
        rows += [{"origin": origin, "label": label, "count": int(c)} for label, c in enumerate(counts)]
    table = pd.DataFrame(rows, columns=["origin", "label", "count"])
    if class_names is not None:
        table.insert(2, "class", np.asarray(class_names, dtype=object)[table["label"].to_numpy(dtype=np.int64)])
    return table


def expectations(config: ValidateConfig, num_classes: int, channels: int = 1) -> dict[str, list]:
    """The GX expectations of each table, by table name, for images of `channels` (1 grey, 3 rgb)."""
    import great_expectations.expectations as gxe  # ~6 s to import: only when validating

    height, width = config.image_shape
    return {
        "examples": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectTableColumnsToMatchSet(column_set=EXAMPLE_COLUMNS + _range_columns(channels), exact_match=True),
            gxe.ExpectColumnValuesToNotBeNull(column="label"),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(num_classes))),
            gxe.ExpectColumnValuesToBeInSet(column="origin", value_set=list(ORIGINS)),
            gxe.ExpectColumnValuesToBeInSet(column="height", value_set=[height]),
            gxe.ExpectColumnValuesToBeInSet(column="width", value_set=[width]),
            gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[channels]),
            *(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, max_value=255)
              for column in _range_columns(channels)),
        ],
        "class_counts": [gxe.ExpectColumnValuesToBeBetween(column="count", min_value=config.least_per_class("images"))],
    }


def validate(
    data: RawDataset, config: ValidateConfig, num_classes: int, source: str = "", docs_dir: Path | None = None,
    clean_report: dict | None = None, class_names: tuple[str, ...] | None = None, channels: int = 1,
) -> Validation:
    """Check the cleaned examples and their counts per class and split, and with the clean
    report what cleaning set aside (granular/core/quarantine.py). `source` names the file
    validated, for the messages; Data Docs are built into `docs_dir` when given."""
    tables = {"examples": example_table(data), "class_counts": class_count_table(data, num_classes, class_names)}
    checks = expectations(config, num_classes, channels)
    if clean_report is not None:
        more_tables, more_checks = quarantine_checks(clean_report, config.least_per_class("images"), config.max_quarantined_share)
        tables, checks = tables | more_tables, checks | more_checks
    return validate_tables(tables, checks, source, docs_dir, row_ids=ROW_IDS | QUARANTINE_ROW_IDS)
