"""Fusion and evaluation tasks."""
from __future__ import annotations

from mlflow.tracking import MlflowClient
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from granular import steps
from granular.config import Config
from granular.paths import ProjectPaths
from tasks import serving, tracking
from tasks.tracking import RunRef


@task(name="fuse_views")
def fuse_views(config: Config, paths: ProjectPaths) -> dict:
    choice = steps.fuse_step(config, paths)
    get_run_logger().info(
        "fusion: %s with weights %s (cross-fitted val log-loss %s)",
        choice["strategy"], choice["weights"], choice["cross_fitted_val_log_loss"],
    )
    return choice


@task(name="evaluate_models")
def evaluate_models(config: Config, paths: ProjectPaths) -> dict:
    metrics = steps.evaluate_step(config, paths)
    rows = [{"model": name, **scores} for name, scores in metrics["test"].items()]
    create_table_artifact(
        key="granular-test-metrics", table=rows, description="Test-set metrics per view and for the fused model"
    )
    return metrics


@task(name="record_evaluation", retries=2, retry_delay_seconds=2)  # a tracking server may blip
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
    tracking.log_metrics(client, parent.run_id, scores)
    confusion = paths.confusion
    for view, run_id in view_runs.items():
        tracking.log_metrics(
            client, run_id, {k: v for k, v in metrics["test"][view].items() if isinstance(v, float)}, step=0
        )
        client.log_artifact(run_id, str(confusion / f"{view}.png"), artifact_path="evaluation")
    client.log_artifacts(parent.run_id, str(confusion), artifact_path="evaluation/confusion")
    client.log_artifact(parent.run_id, str(paths.metrics), artifact_path="evaluation")


@task(name="log_fused_model", retries=2, retry_delay_seconds=2)
def log_fused_model(paths: ProjectPaths, parent: RunRef) -> str:
    """The fused model (every view, the fusion, the taxonomy) as one MLflow pyfunc."""
    uri = serving.log_fused_model(parent, paths.fused_dir, steps.example_images(paths))
    get_run_logger().info("fused model logged as %s", uri)
    return uri
