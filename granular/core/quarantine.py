"""What cleaning set aside, counted by reason: metric names, the one-line summary of a run, and
the checks validation makes of it (too much set aside, or a whole class)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from granular.store.paths import ProjectPaths

REJECTED_METRIC = "clean.rejected"  # + ".<reason slug>": how many examples were rejected for it


def reason_slug(reason: str) -> str:
    """A reason as part of an MLflow metric key: "non-finite pixel value (NaN or inf)" ->
    "non_finite_pixel_value_nan_or_inf"."""
    return re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_")


def rejected_by_reason_metrics(report: dict) -> dict[str, int]:
    """`clean.rejected.<slug>` for every reason in a clean report."""
    return {f"{REJECTED_METRIC}.{reason_slug(r)}": n for r, n in report["rejected_by_reason"].items()}


def summary_line(report: dict, listing: Path) -> str:
    """`quarantined: 3 of 1200 examples (2 label outside ..., 1 non-finite ...) -> data/quarantine/rejected.csv`"""
    reasons = ", ".join(f"{n} {reason}" for reason, n in report["rejected_by_reason"].items())
    counts = f" ({reasons})" if reasons else ""
    return f"quarantined: {report['rejected']} of {report['examined']} examples{counts} -> {listing}"


def project_summary_line(root: Path) -> str:
    """The summary of the last clean of the project at `root` (its clean report)."""
    paths = ProjectPaths(root)
    if not paths.clean_report.is_file():  # a step other than clean.py's prepared the data
        return f"quarantined: nothing recorded ({paths.clean_report} is missing)"
    return summary_line(json.loads(paths.clean_report.read_text()), paths.quarantine_csv)


# The clean report's count of the examples set aside for a label the taxonomy lacks, by label.
UNKNOWN_LABELS = "unknown_labels"
# The columns that name a row of the checks' tables in a failure.
QUARANTINE_ROW_IDS = {"quarantine": ("examined", "set_aside"), "labels_outside_the_taxonomy": ("label",)}


def quarantine_checks(report: dict, least_per_class: int, max_share: float) -> tuple[dict[str, pd.DataFrame], dict[str, list]]:
    """Tables and GX expectations on what cleaning set aside (validation runs them with its own):
    - quarantine: the share of the examples set aside is at most `max_share`;
    - labels_outside_the_taxonomy: no label the taxonomy lacks has `least_per_class` examples
      or more. That many is a class, not a typo: the taxonomy misses it (and, when classes are
      told apart by position, as in an IDX file, every class after it took the wrong name)."""
    import great_expectations.expectations as gxe  # ~6 s to import: only when validating

    examined = max(int(report["examined"]), 1)
    share = pd.DataFrame({"examined": [report["examined"]], "set_aside": [report["rejected"]],
                          "share": [report["rejected"] / examined]})
    unknown = pd.DataFrame(
        [{"label": str(label), "examples": int(count)} for label, count in report.get(UNKNOWN_LABELS, {}).items()],
        columns=["label", "examples"],
    )
    tables = {"quarantine": share}
    expectations = {"quarantine": [gxe.ExpectColumnValuesToBeBetween(column="share", max_value=max_share)]}
    if len(unknown):  # validation refuses a table of no rows
        tables["labels_outside_the_taxonomy"] = unknown
        expectations["labels_outside_the_taxonomy"] = [
            gxe.ExpectColumnValuesToBeBetween(column="examples", max_value=least_per_class - 1),
        ]
    return tables, expectations
