"""Great Expectations checks on the cleaned data, built from params.yaml."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from granular.config import ValidateConfig
from granular.sources import ORIGINS, RawDataset

EXAMPLE_COLUMNS = ["origin", "index", "label", "height", "width", "pixel_min", "pixel_max"]


class ValidationFailed(RuntimeError):
    """Raised when an expectation fails; the message names each failed expectation."""

    def __init__(self, report: dict):
        self.report = report
        lines = [f"data validation failed ({len(report['failed'])} expectation(s)):"]
        lines += [f"  - {f['table']}: {f['expectation']} {f['details']}" for f in report["failed"]]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class _Check:
    table: str
    expectation: object  # a great_expectations expectation


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


def class_count_table(data: RawDataset, num_classes: int) -> pd.DataFrame:
    """Examples per (official split, class), zeros included, so a missing class shows up."""
    rows = []
    for code, origin in enumerate(ORIGINS):
        labels = data.labels[(data.origin == code) & (data.labels >= 0) & (data.labels < num_classes)]
        counts = np.bincount(labels, minlength=num_classes)  # out-of-set labels fail their own check
        rows += [{"origin": origin, "label": label, "count": int(c)} for label, c in enumerate(counts)]
    return pd.DataFrame(rows, columns=["origin", "label", "count"])


def _checks(config: ValidateConfig, num_classes: int) -> list[_Check]:
    import great_expectations.expectations as gxe  # ~6 s to import: only when validating

    height, width = config.image_shape
    return [
        _Check("examples", gxe.ExpectTableRowCountToBeBetween(min_value=1)),
        _Check("examples", gxe.ExpectTableColumnsToMatchSet(column_set=EXAMPLE_COLUMNS, exact_match=True)),
        _Check("examples", gxe.ExpectColumnValuesToNotBeNull(column="label")),
        _Check("examples", gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(num_classes)))),
        _Check("examples", gxe.ExpectColumnValuesToBeInSet(column="origin", value_set=list(ORIGINS))),
        _Check("examples", gxe.ExpectColumnValuesToBeInSet(column="height", value_set=[height])),
        _Check("examples", gxe.ExpectColumnValuesToBeInSet(column="width", value_set=[width])),
        _Check("examples", gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, max_value=255)),
        _Check("examples", gxe.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0, max_value=255)),
        _Check("class_counts", gxe.ExpectColumnValuesToBeBetween(column="count", min_value=config.min_per_class)),
    ]


def _describe(result) -> str:
    """A short account of why one expectation failed, with example values."""
    kwargs = {k: v for k, v in result.expectation_config.kwargs.items() if k not in ("batch_id",)}
    if result.exception_info and result.exception_info.get("raised_exception"):
        return f"{kwargs}: raised {result.exception_info.get('exception_message')}"
    found = result.result or {}
    details = {k: found[k] for k in ("observed_value", "unexpected_count", "partial_unexpected_list") if k in found}
    return f"{kwargs}: {details}"


def validate(data: RawDataset, config: ValidateConfig, num_classes: int) -> dict:
    """Run the suite; return a JSON-able report, or raise ValidationFailed naming what failed."""
    import great_expectations as gx

    tables = {"examples": example_table(data), "class_counts": class_count_table(data, num_classes)}
    checks = _checks(config, num_classes)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no bars in flow logs
    source = context.data_sources.add_pandas("granular")
    outcomes = []
    for table_name, frame in tables.items():
        suite = context.suites.add(gx.ExpectationSuite(name=f"granular_{table_name}"))
        for check in checks:
            if check.table == table_name:
                suite.add_expectation(check.expectation)
        batch = (
            source.add_dataframe_asset(table_name)
            .add_batch_definition_whole_dataframe("all")
            .get_batch(batch_parameters={"dataframe": frame})
        )
        result = batch.validate(suite)
        outcomes += [(table_name, r) for r in result.results]

    failed = [
        {"table": table, "expectation": r.expectation_config.type, "details": _describe(r)}
        for table, r in outcomes
        if not r.success
    ]
    report = {
        "success": not failed,
        "evaluated": len(outcomes),
        "failed": failed,
        "rows": {name: len(frame) for name, frame in tables.items()},
    }
    if failed:
        raise ValidationFailed(report)
    return report
