"""Data tasks: import, clean, validate, partition; and the four in sequence, recorded in MLflow."""
from __future__ import annotations

from prefect import get_run_logger

from granular import steps
from granular.config import Config
from granular.paths import ProjectPaths
from tasks import tracking
from tasks.caching import cached_task, results_in
from tasks.retries import TRANSIENT_RETRIES


# Retried on transient I/O errors only: the source may be a network mount; a missing file is not.
@cached_task("import_raw", name="import_raw", **TRANSIENT_RETRIES)
def import_raw(config: Config, paths: ProjectPaths) -> dict:
    summary = steps.import_raw_step(config, paths)
    get_run_logger().info("imported %d raw file(s) into %s", len(summary["files"]), paths.raw)
    return summary


# The data steps are deterministic: not retried, an error is reported.
@cached_task("clean", name="clean_data")
def clean_data(config: Config, paths: ProjectPaths) -> dict:
    report = steps.clean_step(config, paths)
    get_run_logger().info(
        "kept %d of %d examples; rejected %s (kept with reasons in %s)",
        report["kept"], report["examined"], report["rejected_by_reason"] or "none", paths.quarantine,
    )
    return report


@cached_task("validate", name="validate_data")
def validate_data(config: Config, paths: ProjectPaths) -> dict:
    report = steps.validate_step(config, paths)
    get_run_logger().info("%d expectations passed", report["evaluated"])
    return report


# The view stages list each view whole; its `train` settings are read by training alone.
@cached_task("split", "view", ignored=("views.${key}.train",), name="partition_data")
def partition_data(config: Config, paths: ProjectPaths) -> dict:
    """One split for all views, then each view's files (the DVC stages `split` and `view@NAME`)."""
    splits = steps.split_step(config, paths)
    views = {name: steps.view_step(config, paths, name) for name in config.views}
    get_run_logger().info("splits %s; views %s", splits, sorted(views))
    return {"splits": splits, "views": views}


def prepare_data(config: Config, paths: ProjectPaths, parent: tracking.RunRef) -> dict[str, dict]:
    """import -> clean -> validate -> partition, recording the clean counts and the hash of every
    split in the MLflow run `parent`, so whatever trains next leads back to its exact data.
    Return each task's value by its name."""
    with results_in(paths):
        values = {"import_raw": import_raw(config, paths)}
        values["clean_data"] = clean_data(config, paths)
        tracking.log_clean_report(parent, values["clean_data"])
        values["validate_data"] = validate_data(config, paths)
        values["partition_data"] = partition_data(config, paths)
    tracking.tag_splits(parent, values["partition_data"])
    return values
