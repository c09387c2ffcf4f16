"""The pipeline flow: import -> clean -> validate -> partition -> train per view -> fuse -> distill
-> cascade -> evaluate -> register (champion only past the promotion gate)."""
from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from granular.config import load_config
from granular.runtime.project_lock import hold_project
from granular.store.paths import ProjectPaths
from tasks import crashes, tracking
from tasks.caching import cache_hits, log_cache_hits, results_in
from tasks.data import prepare_data
from tasks.evaluation import (
    distill_student,
    fit_cascade,
    evaluate_models,
    fuse_views,
    log_served_model,
    publish_report,
    record_evaluation,
)
from tasks.progress import RunProgress
from tasks.registry import register_fused_model
from tasks.training import ViewsFailed, train_all_views
from tasks.versioning import commit_data_versions


@flow(name="granular")
def granular_pipeline(root: str = ".", params: str | None = None, overrides: list[str] | None = None) -> dict:
    """Run every step on the project at `root`, configured by its params.yaml (or `params`)
    with `key=value` overrides; return the test metrics and the MLflow run id."""
    paths = ProjectPaths(Path(root).resolve())
    config = load_config(Path(params) if params else paths.params, overrides or [])
    crashes.close_dead_flow_runs(paths.root, flow_run.id, get_run_logger())  # killed before their MLflow run
    parent = tracking.start_parent_run(
        config, paths, run_name=flow_run.name or "granular", tags=tracking.flow_run_tags(),
    )
    try:
        crashes.close_stale_runs(parent, get_run_logger())  # left RUNNING by runs killed outright
        # One run at a time writes the project (data/, dvc.lock, the task cache, the champion);
        # others wait here, their MLflow runs already open.
        with hold_project(paths, flow_run.name or "granular", config.orchestration.lock_timeout_s,
                          log=get_run_logger().info):
            started = time.time()  # a step's value computed before this came from the cache
            progress = RunProgress(len(config.views))
            prepared = prepare_data(config, paths, parent)
            with results_in(paths):  # where the cached tasks keep their results
                progress.step("train views")
                trained, failed = train_all_views(config, paths, parent, on_view_done=progress.view_done)
                if failed:
                    why = "; ".join(f"{name}: {error}" for name, error in failed.items())
                    if not trained or not config.fusion.allow_missing_views:
                        raise ViewsFailed(f"{len(failed)} view(s) failed to train ({why}); "
                                          "set fusion.allow_missing_views=true to fuse the views that finished")
                    tracking.tag_failed_views(parent, failed)
                    config = config.with_views([t["view"] for t in trained])  # fuse and evaluate the rest
                progress.step("fuse")
                fusion = fuse_views(config, paths)
                progress.step("distill")
                student = distill_student(config, paths, parent)  # when disabled, leaves data/student saying so
                progress.step("cascade")
                cascade = fit_cascade(config, paths)  # without stages, leaves data/cascade saying so
                progress.step("evaluate")
                metrics = evaluate_models(config, paths)
            steps = [*prepared.values(), *trained, fusion, student, cascade, metrics]
            log_cache_hits(parent, cache_hits(steps, since=started))
            record_evaluation(paths, parent, metrics, {t["view"]: t["mlflow_run_id"] for t in trained})
            model_uri = log_served_model(config, paths, parent)
            # Outputs match dvc.yaml only when params.yaml was used as it stands and every view trained.
            as_declared = not params and not overrides and not failed
            commit_data_versions(paths, outputs_as_declared=as_declared, parent=parent)
            # Last, so that only a run that succeeded in every other step can become the champion.
            progress.step("register")
            registry = register_fused_model(parent, model_uri, metrics, config)
            progress.finished()
            # Nothing may fail after the registration (the run would be FAILED with a new version in
            # the registry): a report that cannot be written is a warning, not a failed run.
            report = publish_report(parent, metrics, registry, return_state=True)
            if report.is_failed():
                get_run_logger().warning("the Markdown report was not published: %s", report.message)
    except BaseException as error:  # KILLED when a signal stopped the run, else FAILED
        raise crashes.end_parent_run(parent, error, get_run_logger())
    tracking.end_run(parent, "FINISHED")
    return {
        "failed_views": failed,
        "metrics": metrics,
        "fusion": fusion,
        "model_uri": model_uri,
        "registry": registry,
        "mlflow_run_id": parent.run_id,
        "tracking_uri": parent.uri,
    }
