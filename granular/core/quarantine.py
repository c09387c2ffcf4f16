"""What cleaning set aside, counted by reason: metric names and the one-line summary of a run."""
from __future__ import annotations

import json
import re
from pathlib import Path

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
