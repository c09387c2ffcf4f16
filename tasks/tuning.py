"""Hyperparameter search task: one MLflow run for the search, one nested run per trial."""
from __future__ import annotations

from mlflow.tracking import MlflowClient
from prefect import get_run_logger, task

from granular.config import Config
from granular.pipeline.tuning import TrialHooks, tune_view, write_proposal
from granular.store.paths import ProjectPaths
from tasks import tracking


@task(name="tune_view", task_run_name="tune-{view_name}", tags=["granular-train"])
def tune(config: Config, paths: ProjectPaths, view_name: str, parent: tracking.RunRef) -> dict:
    logger = get_run_logger()
    client = MlflowClient(parent.uri)
    runs: dict[int, str] = {}

    def started(number: int, params: dict) -> None:
        run = client.create_run(
            parent.experiment_id, run_name=f"{view_name}-trial-{number}",
            tags={"mlflow.parentRunId": parent.run_id, "granular.view": view_name, "granular.trial": str(number)},
        )
        runs[number] = run.info.run_id
        tracking.log_params(client, run.info.run_id, {"train": params})

    def epoch(number: int, record: dict) -> None:
        tracking.log_metrics(client, runs[number], {k: v for k, v in record.items() if k != "epoch"}, record["epoch"])

    def finished(number: int, state: str, value: float | None) -> None:
        # Optuna's PRUNED and FAIL both end the MLflow run as KILLED or FAILED, so they stand out.
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
        if value is not None:
            tracking.log_metrics(client, runs[number], {"objective": value})
        client.set_tag(runs[number], "granular.trial_state", state.lower())
        client.set_terminated(runs[number], status=status)
        logger.info("trial %d: %s%s", number, state.lower(), f", validation log-loss {value:.4f}" if value is not None else "")

    summary = tune_view(config, paths, view_name, TrialHooks(started=started, epoch=epoch, finished=finished))
    proposal = write_proposal(paths, summary)
    client.log_artifact(parent.run_id, str(proposal), artifact_path="tuning")
    tracking.log_metrics(client, parent.run_id, {"best_objective": summary["best_value"]})
    tracking.log_params(client, parent.run_id, {"best": summary["best_params"]})
    logger.info("best of %s: %s -> %s (proposal: %s)", view_name, summary["best_params"], summary["best_value"], proposal)
    return {**summary, "proposal": str(proposal)}
