"""Training task: one view, one nested MLflow run with per-epoch metrics."""
from __future__ import annotations

from mlflow.tracking import MlflowClient
from prefect import get_run_logger, task

from granular import steps
from granular.config import Config
from granular.paths import ProjectPaths
from tasks import tracking


# Not retried: a training failure is deterministic (bad data, out of memory) and is reported.
@task(name="train_view", task_run_name="train-{view_name}")
def train_view(config: Config, paths: ProjectPaths, view_name: str, parent: tracking.RunRef) -> dict:
    logger = get_run_logger()
    client = MlflowClient(parent.uri)
    run = client.create_run(
        parent.experiment_id, run_name=view_name, tags={"mlflow.parentRunId": parent.run_id, "granular.view": view_name}
    )
    run_id = run.info.run_id
    view = config.view(view_name)
    train_config = config.train_config(view)
    tracking.log_params(
        client, run_id, {"view": view.model_dump(exclude={"train"}), "train": train_config.model_dump()}
    )

    def on_epoch(record: dict) -> None:
        # A segment expert's metrics are named segment-N.<metric>; a plain view's, <metric>.
        expert = f"segment-{record['segment']}" if "segment" in record else ""
        logger.info(
            "%s epoch %d/%d: loss %.4f, val accuracy %.4f, %.0f images/s",
            " ".join(filter(None, (view_name, expert))), record["epoch"], train_config.epochs,
            record["train_loss"], record["val_accuracy"], record["images_per_s"],
        )
        prefix = f"{expert}." if expert else ""
        metrics = {f"{prefix}{k}": v for k, v in record.items() if k not in ("epoch", "segment")}
        tracking.log_metrics(client, run_id, metrics, step=record["epoch"])

    try:
        summary = steps.train_step(config, paths, view_name, on_epoch=on_epoch)
        client.set_tag(run_id, "granular.device", summary["device"])
        client.log_artifacts(run_id, str(paths.model_dir(view_name)), artifact_path="model")
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return {**summary, "mlflow_run_id": run_id}
