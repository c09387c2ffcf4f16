"""Fusion and evaluation tasks."""
from __future__ import annotations

from mlflow.tracking import MlflowClient
from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from granular.config import Config
from granular.core import report
from granular.core.cascade import CASCADE
from granular.modalities import modality_for
from granular.pipeline.cascade import CURVE_FILE, cascade_step
from granular.pipeline.distill import distill_step
from granular.pipeline.evaluate import evaluate_step
from granular.pipeline.fuse import fuse_step
from granular.problems import problem_of
from granular.serving.cascade import CASCADE_FILE
from granular.store.paths import ProjectPaths
from tasks import serving, tracking
from tasks.caching import cached_task
from tasks.retries import TRANSIENT_RETRIES
from tasks.tracking import RunRef


# fuse, distill and evaluate are deterministic: not retried, an error is reported.
@cached_task("fuse", name="fuse_views")
def fuse_views(config: Config, paths: ProjectPaths) -> dict:
    choice = fuse_step(config, paths)
    get_run_logger().info(
        "fusion: %s, %s; scores %s",
        choice["selection"]["reason"], report.for_people(choice["summary"]), report.for_people(choice["selection"]["scores"]),
    )
    return choice


# Cached: a cache hit logs no distillation metrics to this run (they are in the run that
# computed it). Not retried: a retry would distil again for minutes, and MLflow's HTTP client
# already retries a request that a tracking server fails.
@cached_task("distill", name="distill_student")
def distill_student(config: Config, paths: ProjectPaths, parent: RunRef) -> dict:
    """Distil the fused model into one student network (data/student/); its accuracy, latency
    and size before and after each compression go to the parent MLflow run."""
    from granular.nn.distill import report_metrics  # torch is imported only by the tasks that need it

    logger = get_run_logger()
    if not config.distill.enabled:
        return distill_step(config, paths)

    progress = create_progress_artifact(
        progress=0.0, key="distill-student", description=f"distilling the student: {config.distill.epochs} epochs"
    )

    def log_epoch(record: dict) -> None:
        logger.info(
            "student epoch %d: loss %.4f, val acc %.4f, %.0f img/s",
            record["epoch"], record["train_loss"], record["val_accuracy"], record["images_per_s"],
        )
        update_progress_artifact(
            progress, progress=100.0 * record["epoch"] / config.distill.epochs,
            description=f"student: epoch {record['epoch']}/{config.distill.epochs}, val accuracy {record['val_accuracy']:.4f}",
        )

    report = distill_step(config, paths, on_epoch=log_epoch, warn=logger.warning)
    client = MlflowClient(parent.uri)
    tracking.log_metrics(client, parent.run_id, report_metrics(report))
    client.log_artifact(parent.run_id, str(paths.student_dir / "report.json"), artifact_path="distill")
    variants = report["variants"]
    logger.info(
        "student (%s served): test accuracy %s; teacher %.4f",
        report["served"], {name: round(v["accuracy"], 4) for name, v in variants.items()},
        report["teacher"]["test_accuracy"],
    )
    return report


# Cached: its thresholds and measured costs are those of the run that computed it.
@cached_task("cascade", name="fit_cascade")
def fit_cascade(config: Config, paths: ProjectPaths) -> dict:
    """Measure each stage's cost, fit the thresholds on the validation split, write data/cascade/."""
    record = cascade_step(config, paths)
    if record["enabled"]:
        chosen, held_out = record["validation"]["chosen"], record["validation"]["cross_fitted"]
        get_run_logger().info(
            "cascade: %s; validation accuracy %.4f (fused %.4f; cross-fitted %.4f), %.1fx the fused model's speed",
            ", ".join(f"{stage['name']} answers {share:.1%}" for stage, share in zip(record["stages"], chosen["answered"])),
            chosen["accuracy"], record["validation"]["fused_accuracy"], held_out["accuracy"], record["speedup"],
        )
    return record


# Cached: a cache hit creates no test-metrics table artifact in this run.
@cached_task("evaluate", name="evaluate_models")
def evaluate_models(config: Config, paths: ProjectPaths) -> dict:
    metrics = evaluate_step(config, paths)
    rows = [{"model": name, **{key: report.for_people(value) for key, value in scores.items()}}
            for name, scores in metrics["test"].items()]
    create_table_artifact(
        key="granular-test-metrics", table=rows, description="Test-set metrics per view and for the fused model"
    )
    return metrics


@task(name="record_evaluation", **TRANSIENT_RETRIES)  # a tracking server may be down a moment
def record_evaluation(paths: ProjectPaths, parent: RunRef, metrics: dict, view_runs: dict[str, str]) -> None:
    """Test metrics and confusion images into the MLflow runs; the fused model into the parent."""
    client = MlflowClient(parent.uri)
    scores = {
        f"test.{model}.{key}": value
        for model, values in metrics["test"].items()
        for key, value in values.items()
        if isinstance(value, float)
    }
    scores.update({
        f"segments.{view}.{segment}.{key}": value
        for view, by_segment in metrics.get("segments", {}).items()
        for segment, values in by_segment.items()
        for key, value in values.items()
    })
    scores.update(_comparison_scores(metrics))
    scores.update({
        f"latency.{model}.{key}": value
        for model, values in metrics.get("latency", {}).items() if isinstance(values, dict)
        for key, value in values.items()
    })
    tracking.log_metrics(client, parent.run_id, scores)
    confusion = paths.confusion
    for view, run_id in view_runs.items():
        tracking.log_metrics(
            client, run_id, {k: v for k, v in metrics["test"][view].items() if isinstance(v, float)}, step=0
        )
        image = confusion / f"{view}.png"
        if not image.is_file():  # a view of a value: its predicted against actual values
            image = paths.reliability / f"{view}.png"
        client.log_artifact(run_id, str(image), artifact_path="evaluation")
    client.log_artifacts(parent.run_id, str(confusion), artifact_path="evaluation/confusion")
    client.log_artifacts(parent.run_id, str(paths.reliability), artifact_path="evaluation/reliability")
    for file in (paths.metrics, paths.per_class, paths.latency, paths.importance, paths.comparison):
        if file.is_file():  # importance: tables only
            client.log_artifact(parent.run_id, str(file), artifact_path="evaluation")
    if CASCADE in metrics:  # its thresholds, measured stage costs and accuracy-cost curve
        for name in (CASCADE_FILE, CURVE_FILE):
            client.log_artifact(parent.run_id, str(paths.cascade_dir / name), artifact_path="evaluation/cascade")


def _comparison_scores(metrics: dict) -> dict[str, float]:
    """The fusion against the best single view, as MLflow metrics."""
    scores = {}
    if "fused_minus_best_single" in metrics:
        scores["fused_minus_best_single"] = metrics["fused_minus_best_single"]
        ci = metrics["fused_minus_best_single_ci"]
        scores["fused_minus_best_single_ci_low"], scores["fused_minus_best_single_ci_high"] = ci["low"], ci["high"]
    if "mcnemar" in metrics:
        scores["mcnemar_p_value"] = metrics["mcnemar"]["p_value"]
    if "paired_test" in metrics:  # a test of squared errors
        scores["paired_test_p_value"] = metrics["paired_test"]["p_value"]
    if "significance" in metrics:  # the paired test of the run's metric, whichever it is
        scores["significance_p_value"] = metrics["significance"]["p_value"]
    if CASCADE in metrics:  # what the cascade gives up against the fused model, and who answered
        cascade = metrics[CASCADE]
        scores["cascade_accuracy_drop"] = cascade["accuracy_drop"]
        scores["cascade_mcnemar_p_value"] = cascade["mcnemar"]["p_value"]
        scores.update({f"cascade_answered.{stage}": share for stage, share in cascade["answered"].items()})
    return scores


REPORT_KEY = "granular-report"  # the same key on every run: the Prefect UI lists its versions together


# Not retried: the Prefect client retries its own API calls, and an unpublished report is a warning.
@task(name="publish_report")
def publish_report(parent: RunRef, metrics: dict, registry: dict | None) -> str:
    """The run's report as a Prefect Markdown artifact: the models compared, the fusion's
    significance, the registry's verdict, the MLflow run and its images; its headline (the card's
    description) also ends the MLflow run's description."""
    problem = problem_of(metrics)
    lines = report.summary_lines(metrics, problem.gain_unit)
    if registry is not None:
        from tasks.registry import summary_line

        lines.append(summary_line(registry))
    shown = [*problem.report_images, *([f"cascade/{CURVE_FILE}"] if CASCADE in metrics else [])]
    images = {
        path.removesuffix(".png").replace("/", ": "):
            report.artifact_link(parent.uri, parent.run_id, f"evaluation/{path}")
        for path in shown
    }
    markdown = report.markdown_report(
        "granular: test-set comparison", problem.comparison_rows(metrics), lines,
        report.run_link(parent.uri, parent.experiment_id, parent.run_id), images,
    )
    headline = report.headline(metrics, problem.headline, problem.headline_label, registry)
    create_markdown_artifact(markdown=markdown, key=REPORT_KEY, description=headline)
    # At the top of the MLflow run's page too, under its link to the flow run: its metrics list
    # is alphabetical, with the test scores after clean.* and distill.*.
    client = MlflowClient(parent.uri)
    description = client.get_run(parent.run_id).data.tags.get(tracking.DESCRIPTION_TAG, "")
    client.set_tag(parent.run_id, tracking.DESCRIPTION_TAG, f"{description}\n\n{headline}".strip())
    return markdown


@task(name="log_served_model", **TRANSIENT_RETRIES)  # to the tracking server, as above
def log_served_model(config: Config, paths: ProjectPaths, parent: RunRef) -> str:
    """The model the run serves, as one MLflow pyfunc, the run's Logged Model: the cascade (its
    stages and thresholds, the fused model it ends in) where the run has one, else the fused
    model (every view, the fusion, the taxonomy); with the back-off threshold it serves with."""
    examples = modality_for(config).raw_inputs(config, paths, ("test",), count=3)["test"]
    folder = paths.cascade_dir if config.cascade.enabled else paths.fused_dir
    uri = serving.log_served_model(parent, folder, examples, config.serving.backoff_threshold)
    get_run_logger().info("served model (%s) logged as %s", "the cascade" if config.cascade.enabled else "the fused model", uri)
    return uri
