"""Data tasks: import, clean, validate, partition; and the four in sequence, recorded in MLflow."""
from __future__ import annotations

from prefect import get_run_logger, task

from granular import steps
from granular.config import Config
from granular.paths import ProjectPaths
from tasks import tracking


@task(name="import_raw", retries=2, retry_delay_seconds=2)  # file copies: transient I/O errors
def import_raw(config: Config, paths: ProjectPaths) -> dict:
    summary = steps.import_raw_step(config, paths)
    get_run_logger().info("imported %d raw file(s) into %s", len(summary["files"]), paths.raw)
    return summary


@task(name="clean_data")
def clean_data(config: Config, paths: ProjectPaths) -> dict:
    report = steps.clean_step(config, paths)
    get_run_logger().info(
        "kept %d of %d examples; rejected %s (kept with reasons in %s)",
        report["kept"], report["examined"], report["rejected_by_reason"] or "none", paths.quarantine,
    )
    return report


@task(name="validate_data")
def validate_data(config: Config, paths: ProjectPaths) -> dict:
    report = steps.validate_step(config, paths)
    get_run_logger().info("%d expectations passed", report["evaluated"])
    return report


@task(name="partition_data")
def partition_data(config: Config, paths: ProjectPaths) -> dict:
    """One split for all views, then each view's files (the DVC stages `split` and `view@NAME`)."""
    splits = steps.split_step(config, paths)
    views = {name: steps.view_step(config, paths, name) for name in config.views}
    get_run_logger().info("splits %s; views %s", splits, sorted(views))
    return {"splits": splits, "views": views}


def prepare_data(config: Config, paths: ProjectPaths, parent: tracking.RunRef) -> dict:
    """import -> clean -> validate -> partition, recording the clean counts and the hash of every
    split in the MLflow run `parent`, so whatever trains next leads back to its exact data."""
    import_raw(config, paths)
    tracking.log_clean_report(parent, clean_data(config, paths))
    validate_data(config, paths)
    partitions = partition_data(config, paths)
    tracking.tag_splits(parent, partitions)
    return partitions
