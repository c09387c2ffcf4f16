"""Great Expectations checks on tables of the cleaned data, and our own checks beside them.

GX passes some broken tables: its column checks pass on zero rows, a missing column shows only
inside `exception_info`, and ±inf passes a not-null check. Our own checks run beside GX's and
fail those explicitly. A failure names the file validated, the table, the column, the
expectation and up to EXAMPLE_ROWS offending rows (an image as `origin/index`, e.g. train/4123).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

EXAMPLE_ROWS = 5  # offending rows quoted per failed expectation
DOCS_SITE = "granular"

# Our own checks, named beside GX's expectation types in a report.
ROWS_PRESENT = "granular.table_has_rows"
COLUMN_PRESENT = "granular.column_exists"
VALUES_FINITE = "granular.values_are_finite"


def failure_line(failure: dict) -> str:
    """One failed check: table, column, expectation, what was wrong, example rows."""
    where = failure.get("table", "?")
    if failure.get("column"):
        where += f", column {failure['column']!r}"
    line = f"  - {where}: {failure['expectation']}: {failure.get('details', '')}".rstrip(": ")
    examples = examples_text(failure)
    return f"{line}\n      e.g. {examples}" if examples else line


def examples_text(failure: dict) -> str:
    """The offending rows a failure quotes: `train/3: label=7; train/9: label=8`."""
    return "; ".join(
        f"{example['row']}: " + ", ".join(f"{k}={_rounded(v)}" for k, v in example.items() if k != "row")
        for example in failure.get("examples") or []
    )


def _rounded(value: Any) -> Any:
    """A fraction to four significant digits (0.0909, not 0.09090909090909091)."""
    return f"{value:.4g}" if isinstance(value, float) else value


class ValidationFailed(RuntimeError):
    """Raised when an expectation fails; the message names the file, and each failed
    expectation with its table, column and example rows."""

    def __init__(self, report: dict):
        self.report = report
        source = f" on {report['source']}" if report.get("source") else ""
        lines = [f"data validation failed ({len(report['failed'])} expectation(s)){source}:"]
        lines += [failure_line(f) for f in report["failed"]]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Validation:
    """What a validation found: a short report (validation.json) and each suite's full GX
    result as JSON (result.json)."""

    report: dict
    results: dict[str, dict]

    @property
    def success(self) -> bool:
        return self.report["success"]

    def raise_if_failed(self) -> None:
        if not self.success:
            raise ValidationFailed(self.report)


def row_name(row: dict[str, Any], id_columns: tuple[str, ...]) -> str:
    """How a failure names a row: an image as origin/index (train/4123), else column=value pairs."""
    if tuple(id_columns) == ("origin", "index"):
        return f"{row.get('origin')}/{row.get('index')}"
    return " ".join(f"{c}={row.get(c)}" for c in id_columns)


def _examples_from_frame(frame: pd.DataFrame, mask: np.ndarray, column: str, id_columns: tuple[str, ...]) -> list[dict]:
    present = tuple(c for c in id_columns if c in frame.columns)
    return [
        {"row": row_name(row, present), column: row[column]}
        for row in frame.loc[mask].head(EXAMPLE_ROWS).to_dict("records")
    ]


def own_checks(
    table: str, frame: pd.DataFrame, table_expectations: list, may_be_missing: frozenset[str] = frozenset(),
    id_columns: tuple[str, ...] = (),
) -> list[dict]:
    """The failures GX would pass or bury: no rows, a column an expectation names but the table
    lacks, NaN or ±inf in a numeric column (only ±inf in one that `may_be_missing`)."""
    if len(frame) == 0:
        return [{"table": table, "column": None, "expectation": ROWS_PRESENT, "details": "0 rows: nothing to validate"}]
    failures = []
    columns = ", ".join(map(str, frame.columns))
    for column in sorted({e.column for e in table_expectations if getattr(e, "column", None)} - set(frame.columns)):
        failures.append({
            "table": table, "column": column, "expectation": COLUMN_PRESENT,
            "details": f"column {column!r} is missing (columns: {columns})",
        })
    for column in frame.columns:
        values = frame[column].to_numpy()
        if not np.issubdtype(values.dtype, np.number):
            continue
        values = values.astype(np.float64)
        bad = np.isinf(values) if column in may_be_missing else ~np.isfinite(values)
        if bad.any():
            failures.append({
                "table": table, "column": str(column), "expectation": VALUES_FINITE,
                "details": f"{int(bad.sum())} of {len(frame)} rows are NaN or ±inf (GX's not-null check passes ±inf)",
                "examples": _examples_from_frame(frame, bad, column, id_columns),
            })
    return failures


def settings_text(kwargs: dict) -> str:
    """An expectation's settings for people: `min_value=1000`, not a Python dict."""
    def shown(value: Any) -> str:
        if isinstance(value, float) and value.is_integer():
            return f"{value:.0f}"
        if isinstance(value, (list, tuple)) and len(value) > 12:
            return ", ".join(map(str, value[:12])) + f", ... ({len(value)} in all)"
        return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    return "; ".join(
        f"{key}={shown(value)}" for key, value in kwargs.items() if key not in ("batch_id", "column") and value is not None
    )


def describe_result(table: str, result, id_columns: tuple[str, ...]) -> dict:
    """One failed GX expectation as a failure: its settings, what was observed, example rows."""
    column = result.expectation_config.kwargs.get("column")
    settings = settings_text(result.expectation_config.kwargs)
    failure = {"table": table, "column": column, "expectation": result.expectation_config.type}
    if result.exception_info and result.exception_info.get("raised_exception"):
        return failure | {"details": f"{settings}: raised {result.exception_info.get('exception_message')}"}
    found = result.result or {}
    details = settings
    if "observed_value" in found:
        details += f": observed {found['observed_value']}"
    if found.get("unexpected_count"):
        details += f": {found['unexpected_count']} of {found.get('element_count')} rows fail"
    examples = [
        {"row": row_name(row, id_columns), column: row.get(column)}
        for row in found.get("partial_unexpected_index_list") or []
    ][:EXAMPLE_ROWS]
    return failure | {"details": details, "examples": examples}


def validate_tables(
    tables: dict[str, pd.DataFrame], by_table: dict[str, list], source: str = "", docs_dir: Path | None = None,
    may_be_missing: frozenset[str] = frozenset(), row_ids: dict[str, tuple[str, ...]] | None = None,
) -> Validation:
    """Run our own checks and one GX suite per table (`by_table`: its expectations). Columns in
    `may_be_missing` may hold NaN (a table's features are imputed), never ±inf. `row_ids`: the
    columns that name a row of each table in a failure (an image: origin and index)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no bars in flow logs
    data_source = context.data_sources.add_pandas("granular")
    failed, results, evaluated = [], {}, 0
    for table, frame in tables.items():
        id_columns = tuple(c for c in (row_ids or {}).get(table, ()) if c in frame.columns)
        own = own_checks(table, frame, by_table[table], may_be_missing, id_columns)
        missing = {f["column"] for f in own if f["expectation"] == COLUMN_PRESENT}  # GX only raises on them
        result = _run_suite(context, data_source, table, frame, by_table[table], id_columns)
        results[f"granular_{table}"] = result.to_json_dict()
        evaluated += len(result.results)
        failed += own
        failed += [
            describe_result(table, r, id_columns)
            for r in result.results
            if not r.success and r.expectation_config.kwargs.get("column") not in missing
        ]
    if docs_dir is not None:
        build_data_docs(context, docs_dir)
    report = {
        "success": not failed,
        "source": source,
        "evaluated": evaluated,
        "failed": failed,
        "rows": {name: len(frame) for name, frame in tables.items()},
    }
    return Validation(report=_plain(report), results=results)


def _run_suite(context, data_source, table: str, frame: pd.DataFrame, table_expectations: list, id_columns: tuple):
    import great_expectations as gx

    suite = context.suites.add(gx.ExpectationSuite(name=f"granular_{table}"))
    for expectation in table_expectations:
        suite.add_expectation(expectation)
    batch = data_source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=table, data=batch, suite=suite))
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLE_ROWS}
    if id_columns:  # GX then lists the offending rows by these columns
        result_format["unexpected_index_column_names"] = list(id_columns)
    return definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)


def build_data_docs(context, target: Path) -> None:
    """GX's Data Docs of the suites just validated, in `target`: the pages and the local files
    they link (GX's site also holds ~4 MB of images no page of ours links)."""
    with tempfile.TemporaryDirectory(prefix="granular-docs-") as site:
        context.add_data_docs_site(DOCS_SITE, {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": site},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
        context.build_data_docs(site_names=[DOCS_SITE])
        for page in sorted(Path(site).rglob("*.html")):
            for linked in [page, *_local_links(page)]:
                copy = target / linked.relative_to(site)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(linked, copy)


def _local_links(page: Path) -> list[Path]:
    """Files of the site a page links by a relative href or src (not pages: they are copied anyway)."""
    found = []
    for link in re.findall(r'(?:href|src)="([^"#?:]+)"', page.read_text()):
        path = Path(os.path.normpath(page.parent / link))
        if path.is_file() and path.suffix != ".html":
            found.append(path)
    return found


def markdown_report(result: dict) -> str:
    """result.json as Markdown: every check, GX's and ours, passed or failed, with what failed."""
    failures = {(f["table"], f.get("column"), f["expectation"]): f for f in result["failed"]}
    rows = []
    for suite, outcome in result["suites"].items():
        table = suite.removeprefix("granular_")
        for expectation in outcome["results"]:
            config = expectation["expectation_config"]
            column = config["kwargs"].get("column")
            key = (table, column, config["type"])
            failure = failures.pop(key, None) if not expectation["success"] else None
            if failure is None and not expectation["success"]:  # reported by our own check instead
                continue
            rows.append((table, column, config["type"], failure, settings_text(config["kwargs"])))
    rows = [(f["table"], f.get("column"), f["expectation"], f, "") for f in failures.values()] + rows
    lines = [
        f"## Data validation {'passed' if result['success'] else 'FAILED'}",
        "",
        f"Validated: `{result.get('source') or '?'}`; {result['evaluated']} GX expectations; rows: "
        + ", ".join(f"{table} {count:,}" for table, count in result["rows"].items()) + ".",
        "",
        "| table | column | expectation | result | details |",
        "|---|---|---|---|---|",
    ]
    for table, column, expectation, failure, settings in rows:
        details = settings if failure is None else failure.get("details", "")
        if failure is not None and examples_text(failure):
            details += f"; e.g. {examples_text(failure)}"
        cell = details.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {table} | {column or ''} | `{expectation}` | {'fail' if failure else 'pass'} | {cell} |")
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    """numpy scalars (in example rows) as Python values, so the report is JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value
