"""Per-view training on a Dask cluster (orchestration.task_runner: dask): two worker processes
on loopback, the whole flow pointed at them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from distributed import Client, LocalCluster, get_task_stream
from distributed.diagnostics.plugin import WorkerPlugin
from mlflow.tracking import MlflowClient
from small_project import SMALL_RUN, default_project

import tasks.training
from flows.pipeline import granular_pipeline
from granular.config import Config

pytestmark = [pytest.mark.usefixtures("prefect_test_server"), pytest.mark.slow]

THREE_VIEWS = SMALL_RUN + [
    "train.epochs=1",
    "train.threads=1",  # one core per worker: two workers share this machine
    "distill.enabled=false",
    "fusion.allow_missing_views=true",
    "views={fine-28: {level: fine, resolution: 28}, coarse-28: {level: coarse, resolution: 28},"
    " fine-14: {level: fine, resolution: 14}}",
]
FAILING_VIEW = "fine-14"


class FailTrainingOf(WorkerPlugin):
    """In each worker process, make one view's training fail (a monkeypatch here would not
    reach the workers)."""

    def __init__(self, view: str):
        self.view = view

    def setup(self, worker) -> None:
        from granular.pipeline import train as step

        train_step = step.train_step

        def failing_train_step(config, paths, view_name, **kwargs):
            if view_name == self.view:
                raise RuntimeError("out of memory (simulated on a worker)")
            return train_step(config, paths, view_name, **kwargs)

        step.train_step = failing_train_step


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return default_project(tmp_path)


@pytest.fixture
def cluster():
    """Two single-threaded worker processes, as `dask worker` would run on two machines."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as local_cluster, Client(local_cluster) as client:
        yield local_cluster, client


def test_views_train_on_the_workers_of_a_dask_cluster_and_a_failed_one_stops_no_other(project: Path, cluster):
    local_cluster, client = cluster
    client.register_plugin(FailTrainingOf(FAILING_VIEW))
    dask_settings = ["orchestration.task_runner=dask", f"orchestration.dask_address={local_cluster.scheduler_address}"]
    with get_task_stream(client) as stream:  # what the scheduler ran, on which worker
        result = granular_pipeline(root=str(project), overrides=THREE_VIEWS + dask_settings)

    trainings = [task for task in stream.data if task["key"].startswith("train_view")]
    assert len(trainings) == 3  # every view's training went to the cluster, and both workers took some
    assert {task["worker"] for task in trainings} == set(local_cluster.scheduler_info["workers"])

    assert result["failed_views"] == {FAILING_VIEW: "RuntimeError: out of memory (simulated on a worker)"}
    assert set(result["metrics"]["test"]) == {"fine-28", "coarse-28", "fused", "cascade", "fine-28-no-tta"}
    metrics = json.loads((project / "data/evaluation/metrics.json").read_text())
    for view in ("fine-28", "coarse-28"):  # the workers' models, scored here on the whole test subsample
        assert (project / "data/models" / view / "network-0.pt").is_file()
        assert metrics["test"][view]["n"] == 600 and 0 <= metrics["test"][view]["accuracy"] <= 1
    tracking = MlflowClient(result["tracking_uri"])
    parent = tracking.get_run(result["mlflow_run_id"])
    views = tracking.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert {run.data.tags["granular.view"]: run.info.status for run in views} == {
        "fine-28": "FINISHED", "coarse-28": "FINISHED", FAILING_VIEW: "FAILED"
    }
    assert parent.info.status == "FINISHED"


def test_a_temporary_cluster_holds_as_many_trainings_as_the_machine(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tasks.training, "concurrent_trainings", lambda threads: 8 // (threads or 8))
    local = {"task_runner": "dask"}

    def cluster_kwargs(train: dict, orchestration: dict) -> dict:
        config = Config.model_validate({"train": train, "orchestration": orchestration})
        return tasks.training.dask_task_runner(config).cluster_kwargs

    assert cluster_kwargs({"threads": 2}, local)["n_workers"] == 4  # 8 cores, 2 threads a training
    assert cluster_kwargs({}, local)["n_workers"] == 1  # every core for each training: one at a time
    chosen = cluster_kwargs({"threads": 2}, {**local, "n_workers": 3, "threads_per_worker": 2})
    assert (chosen["n_workers"], chosen["threads_per_worker"], chosen["processes"]) == (3, 2, True)
    assert chosen["host"] == "127.0.0.1"  # reachable from this machine only

    address = "tcp://10.0.0.5:8786"
    runner = tasks.training.dask_task_runner(Config.model_validate({"orchestration": {**local, "dask_address": address}}))
    assert (runner.address, runner.cluster_kwargs) == (address, {})
