"""The search flow: the data steps as in the pipeline, then an Optuna search of one view."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from granular.config import load_config
from granular.runtime.project_lock import hold_project
from granular.store.paths import ProjectPaths
from tasks import crashes, tracking
from tasks.data import prepare_data
from tasks.tuning import tune


@flow(name="granular-tune")
def tune_flow(view: str, root: str = ".", params: str | None = None, overrides: list[str] | None = None) -> dict:
    """Search the training settings of `view` as tune: in params.yaml says; return the best
    settings, the path of the proposal and the MLflow run id."""
    paths = ProjectPaths(Path(root).resolve())
    config = load_config(Path(params) if params else paths.params, overrides or [])
    config.view(view)  # an unknown view fails here, before any work
    parent = tracking.start_parent_run(
        config, paths, run_name=f"tune-{view}",
        tags={**tracking.flow_run_tags(), "granular.tune": view},
    )
    try:
        # The data steps write the project's outputs: one run at a time, as in the pipeline.
        with hold_project(paths, f"tune-{view}", config.orchestration.lock_timeout_s, log=get_run_logger().info):
            prepare_data(config, paths, parent)
        summary = tune(config, paths, view, parent)
    except BaseException as error:
        raise crashes.end_parent_run(parent, error, get_run_logger())
    tracking.end_run(parent, "FINISHED")
    return {**summary, "mlflow_run_id": parent.run_id}
