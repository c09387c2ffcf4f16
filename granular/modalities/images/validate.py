"""The expectations on clean images: one row per example (label, origin, shape, pixel range) and
the count of each class in each official split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from granular.config import ValidateConfig
from granular.core.partition import ORIGINS
from granular.core.quarantine import QUARANTINE_ROW_IDS, quarantine_checks
from granular.core.validation import Validation, validate_tables
from granular.modalities.images.sources import RawDataset

EXAMPLE_COLUMNS = ["origin", "index", "label", "height", "width", "pixel_min", "pixel_max"]
# The columns that name a row of each table in a failure: an image is origin/index.
ROW_IDS = {"examples": ("origin", "index"), "class_counts": ("origin", "label", "class")}


def example_table(data: RawDataset) -> pd.DataFrame:
    """One row per example: what the expectations look at."""
    n = len(data)
    flat = data.images.reshape(n, -1) if n else np.zeros((0, 1))
    height, width = data.images.shape[1:3] if data.images.ndim == 3 else (0, 0)
    return pd.DataFrame(
        {
            "origin": np.asarray(ORIGINS)[data.origin] if n else np.array([], dtype=str),
            "index": data.index,
            "label": data.labels,
            "height": np.full(n, height),
            "width": np.full(n, width),
            "pixel_min": flat.min(axis=1) if n else np.array([]),
            "pixel_max": flat.max(axis=1) if n else np.array([]),
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


def expectations(config: ValidateConfig, num_classes: int) -> dict[str, list]:
    """The GX expectations of each table, by table name."""
    import great_expectations.expectations as gxe  # ~6 s to import: only when validating

    height, width = config.image_shape
    return {
        "examples": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectTableColumnsToMatchSet(column_set=EXAMPLE_COLUMNS, exact_match=True),
            gxe.ExpectColumnValuesToNotBeNull(column="label"),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(num_classes))),
            gxe.ExpectColumnValuesToBeInSet(column="origin", value_set=list(ORIGINS)),
            gxe.ExpectColumnValuesToBeInSet(column="height", value_set=[height]),
            gxe.ExpectColumnValuesToBeInSet(column="width", value_set=[width]),
            gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, max_value=255),
            gxe.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0, max_value=255),
        ],
        "class_counts": [gxe.ExpectColumnValuesToBeBetween(column="count", min_value=config.least_per_class("images"))],
    }


def validate(
    data: RawDataset, config: ValidateConfig, num_classes: int, source: str = "", docs_dir: Path | None = None,
    clean_report: dict | None = None, class_names: tuple[str, ...] | None = None,
) -> Validation:
    """Check the cleaned examples and their counts per class and split, and with the clean
    report what cleaning set aside (granular/core/quarantine.py). `source` names the file
    validated, for the messages; Data Docs are built into `docs_dir` when given."""
    tables = {"examples": example_table(data), "class_counts": class_count_table(data, num_classes, class_names)}
    checks = expectations(config, num_classes)
    if clean_report is not None:
        more_tables, more_checks = quarantine_checks(clean_report, config.least_per_class("images"), config.max_quarantined_share)
        tables, checks = tables | more_tables, checks | more_checks
    return validate_tables(tables, checks, source, docs_dir, row_ids=ROW_IDS | QUARANTINE_ROW_IDS)
