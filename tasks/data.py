"""Data tasks: import, clean, validate, partition; and the four in sequence, recorded in MLflow."""
from __future__ import annotations

import json

from mlflow.tracking import MlflowClient
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from granular.config import Config
from granular.core.quarantine import rejected_by_reason_metrics
from granular.core.validation import ValidationFailed, markdown_report
from granular.pipeline.clean import clean_step
from granular.pipeline.import_raw import import_raw_step
from granular.pipeline.split import split_step
from granular.pipeline.validate import validate_step
from granular.pipeline.view import view_step
from granular.store.paths import ProjectPaths
from tasks import tracking
from tasks.caching import cached_task, results_in
from tasks.retries import TRANSIENT_RETRIES

VALIDATION_KEY = "granular-validation"  # the Prefect artifact: every expectation, passed or failed


# Retried on transient I/O errors only: the source may be a network mount; a missing file is not.
@cached_task("import_raw", name="import_raw", **TRANSIENT_RETRIES)
def import_raw(config: Config, paths: ProjectPaths) -> dict:
    summary = import_raw_step(config, paths)
    get_run_logger().info("imported %d raw file(s) into %s", len(summary["files"]), paths.raw)
    return summary


# The data steps are deterministic: not retried, an error is reported.
@cached_task("clean", name="clean_data")
def clean_data(config: Config, paths: ProjectPaths) -> dict:
    report = clean_step(config, paths)
    get_run_logger().info(
        "kept %d of %d examples; rejected %s (kept with reasons in %s)",
        report["kept"], report["examined"], report["rejected_by_reason"] or "none", paths.quarantine,
    )
    return report


# Not cached: a run whose clean step came from the cache records its quarantine all the same.
@task(name="record_quarantine", **TRANSIENT_RETRIES)
def record_quarantine(paths: ProjectPaths, parent: tracking.RunRef, report: dict) -> None:
    """The rejected examples counted by reason (metrics `clean.rejected.<reason>`) and their
    listing (artifact quarantine/rejected.csv) in the MLflow run `parent`."""
    client = MlflowClient(parent.uri)
    tracking.log_metrics(client, parent.run_id, rejected_by_reason_metrics(report))
    client.log_artifact(parent.run_id, str(paths.quarantine_csv), artifact_path="quarantine")


@cached_task("validate", name="validate_data")
def validate_data(config: Config, paths: ProjectPaths) -> dict:
    report = validate_step(config, paths)
    get_run_logger().info("%d expectations passed", report["evaluated"])
    return report


@task(name="record_validation", **TRANSIENT_RETRIES)
def record_validation(paths: ProjectPaths, parent: tracking.RunRef) -> None:
    """GX's results and Data Docs as artifacts validation/... of the MLflow run `parent`, and a
    Prefect Markdown artifact of every expectation with what failed (key granular-validation)."""
    saved = paths.validation_dir / "result.json"
    if not saved.is_file():  # a cached validation whose folder was deleted since
        get_run_logger().warning("no validation results to record: %s is missing", saved)
        return
    result = json.loads(saved.read_text())
    MlflowClient(parent.uri).log_artifacts(parent.run_id, str(paths.validation_dir), artifact_path="validation")
    create_markdown_artifact(
        key=VALIDATION_KEY, markdown=markdown_report(result),
        description=f"Data validation {'passed' if result['success'] else 'failed'}: {result['source']}",
    )


def _validate_and_record(config: Config, paths: ProjectPaths, parent: tracking.RunRef) -> dict:
    """Validate; record the results also when validation fails, before the failure stops the run
    (a failure to record them is then a warning: the user is to see the validation's failure)."""
    try:
        report = validate_data(config, paths)
    except ValidationFailed:
        recorded = record_validation(paths, parent, return_state=True)
        if recorded.is_failed():
            get_run_logger().warning("the failed validation's results were not recorded: %s", recorded.message)
        raise
    record_validation(paths, parent)
    return report


# The view stages list each view whole; its `train` settings are read by training alone.
@cached_task(
    "split", "view", "view_cotrained", "view_transfer", name="partition_data",
    ignored=("views.${key}.train", "cotrained.${key}.train", "transfers.${key}.train"),
)
def partition_data(config: Config, paths: ProjectPaths) -> dict:
    """One split for all views, then each view's files (the DVC stages `split`, `view@NAME`,
    `view_cotrained@NAME` and `view_transfer@NAME`)."""
    splits = split_step(config, paths)
    views = {name: view_step(config, paths, name) for name in config.views}
    get_run_logger().info("splits %s; views %s", splits, sorted(views))
    return {"splits": splits, "views": views}


def prepare_data(config: Config, paths: ProjectPaths, parent: tracking.RunRef) -> dict[str, dict]:
    """import -> clean -> validate -> partition, recording the clean counts and the quarantine,
    the validation's results and Data Docs (also of a failed validation) and the hash of every
    split in the MLflow run `parent`, so whatever trains next leads back to its exact data.
    Return each task's value by its name."""
    with results_in(paths):
        values = {"import_raw": import_raw(config, paths)}
        values["clean_data"] = clean_data(config, paths)
        tracking.log_clean_report(parent, values["clean_data"])
        record_quarantine(paths, parent, values["clean_data"])
        values["validate_data"] = _validate_and_record(config, paths, parent)
        values["partition_data"] = partition_data(config, paths)
    tracking.tag_splits(parent, values["partition_data"])
    return values
