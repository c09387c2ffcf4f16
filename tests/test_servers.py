"""`granular server`: a real Prefect server and MLflow tracking server on loopback, a run made
against them seen through both APIs and linked both ways, and a clean stop on SIGTERM.

The two end-to-end tests share one `granular server` (starting one takes 20-50 s here); the
last of them stops it.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient
from test_flow import FASHION_MNIST, REPO, SMALL_RUN

from flows import servers
from flows.cli import main as granular_cli

STARTUP_TIMEOUT_S = 150  # both servers on a busy 2-core machine; the command itself waits 120 s


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def make_project(folder: Path) -> Path:
    """A project folder with the repository's params.yaml and taxonomy, as tests/test_flow.py makes."""
    assert FASHION_MNIST.is_dir(), "the real dataset is needed: apt-get install dataset-fashion-mnist"
    (folder / "data").mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    shutil.copy(REPO / "data" / "taxonomy.yaml", folder / "data" / "taxonomy.yaml")
    return folder


@dataclass
class RunningServers:
    """A `granular server` process, what it printed, and the processes it started."""

    process: subprocess.Popen
    root: Path
    ports: tuple[int, int]
    output: list[str] = field(default_factory=list)
    family: list[psutil.Process] = field(default_factory=list)

    def exports(self) -> dict[str, str]:
        """The variables of the `export ...` line it printed for users to paste."""
        line = next(line for line in self.output if line.startswith("export "))
        return dict(pair.split("=", 1) for pair in line.removeprefix("export ").split())


def read_lines(process: subprocess.Popen, into: list[str]) -> None:
    for line in process.stdout:
        into.append(line.rstrip("\n"))


def stop_for_good(running: RunningServers) -> None:
    """Stop the command, then any server it left behind (by the pids it had started)."""
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGTERM)
        try:
            running.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            running.process.kill()
    for process in running.family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def granular_server(tmp_path_factory: pytest.TempPathFactory):
    root = make_project(tmp_path_factory.mktemp("served"))
    ports = (free_port(), free_port())
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "server", "--root", str(root),
         "--prefect-port", str(ports[0]), "--mlflow-port", str(ports[1])],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    running = RunningServers(process, root, ports)
    threading.Thread(target=read_lines, args=(process, running.output), daemon=True).start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not any(line.startswith("export ") for line in running.output):
            assert process.poll() is None, "granular server exited:\n" + "\n".join(running.output)
            assert time.monotonic() < deadline, "granular server did not get ready:\n" + "\n".join(running.output)
            time.sleep(0.5)
        running.family = psutil.Process(process.pid).children(recursive=True)
        yield running
    finally:
        stop_for_good(running)


def read_prefect_records(api_url: str, flow_run_id: str) -> tuple:
    """The flow run, its flow's name, its task runs and its artifacts, through the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read():
        async with get_client() as client:
            flow_run = await client.read_flow_run(flow_run_id)
            flow = await client.read_flow(flow_run.flow_id)
            task_runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
            )
            return flow_run, flow.name, task_runs, artifacts

    with temporary_settings({PREFECT_API_URL: api_url}):
        return asyncio.run(read())


def test_a_run_against_the_servers_shows_in_both_and_links_both_ways(granular_server: RunningServers):
    exports = granular_server.exports()
    prefect_api, tracking_uri = exports["PREFECT_API_URL"], exports["MLFLOW_TRACKING_URI"]
    assert prefect_api == f"http://127.0.0.1:{granular_server.ports[0]}/api"
    assert tracking_uri == f"http://127.0.0.1:{granular_server.ports[1]}"
    overrides = SMALL_RUN + ["train.epochs=1"]
    run = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--root", str(granular_server.root)]
        + [arg for override in overrides for arg in ("--set", override)],
        cwd=REPO, env={**os.environ, **exports}, capture_output=True, text=True, timeout=400,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    mlflow_run_id, uri = re.search(r"^MLflow run:\s+(\w+) in (\S+)$", run.stdout, re.MULTILINE).groups()
    assert uri == tracking_uri  # the run went to the MLflow server

    parent = MlflowClient(tracking_uri).get_run(mlflow_run_id)
    flow_run_id = parent.data.tags["prefect.flow_run_id"]
    prefect_ui = prefect_api.removesuffix("/api")
    assert parent.data.tags["prefect.flow_run_url"] == f"{prefect_ui}/flow-runs/flow-run/{flow_run_id}"
    as_a_browser = urllib.request.Request(parent.data.tags["prefect.flow_run_url"], headers={"Accept": "text/html"})
    with urllib.request.urlopen(as_a_browser, timeout=10) as page:
        assert page.status == 200 and b"<html" in page.read().lower()  # the UI serves the page the tag links to

    flow_run, flow_name, task_runs, artifacts = read_prefect_records(prefect_api, flow_run_id)
    assert flow_name == "granular"
    assert flow_run.state.type.value == "COMPLETED"
    assert flow_run.name == parent.data.tags["prefect.flow_run_name"]
    task_names = {task_run.name for task_run in task_runs}
    views = ["fine-28", "fine-14", "coarse-28", "fine-14-clusters4"]
    assert {f"train-{view}" for view in views} <= task_names  # named by the task itself
    for step in ["clean_data", "validate_data", "partition_data", "fuse_views", "evaluate_models", "register_fused_model"]:
        assert any(name.startswith(f"{step}-") for name in task_names), (step, task_names)
    assert all(task_run.state.type.value == "COMPLETED" for task_run in task_runs)
    by_key = {artifact.key: artifact for artifact in artifacts}
    assert {"granular-report", "train-fine-28", "granular-test-metrics"} <= set(by_key)
    # The other way: the Prefect report links the MLflow run in the MLflow UI.
    run_page = f"{tracking_uri}/#/experiments/{parent.info.experiment_id}/runs/{mlflow_run_id}"
    assert f"({run_page})" in by_key["granular-report"].data

    # The server serves the project's own store: the run is in <root>/mlruns.db.
    local = MlflowClient(f"sqlite:///{granular_server.root / 'mlruns.db'}")
    assert local.get_run(mlflow_run_id).info.status == "FINISHED"


def test_server_answers_then_stops_both_servers_on_sigterm(granular_server: RunningServers):
    prefect_port, mlflow_port = granular_server.ports
    for url in (f"http://127.0.0.1:{prefect_port}/api/health", f"http://127.0.0.1:{mlflow_port}/health"):
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
    assert (granular_server.root / ".granular" / "prefect" / "prefect.db").is_file()  # Prefect's state in the project
    assert len(granular_server.family) >= 2

    granular_server.process.send_signal(signal.SIGTERM)
    assert granular_server.process.wait(timeout=60) == 0
    _, alive = psutil.wait_procs(granular_server.family, timeout=10)
    assert alive == []
    assert not listening(prefect_port) and not listening(mlflow_port)
    assert "stopping the servers" in granular_server.output
    assert not any("killing it" in line for line in granular_server.output)  # both stopped on SIGTERM


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path, capsys: pytest.CaptureFixture):
    project = make_project(tmp_path / "project")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = granular_cli(["server", "--root", str(project), "--prefect-port", str(port),
                             "--mlflow-port", str(free_port())])
    assert code == 1
    assert f"cannot start the Prefect server on 127.0.0.1:{port}" in capsys.readouterr().err
    assert not (project / ".granular" / "logs" / "prefect.log").exists()  # nothing was started


def test_when_one_server_dies_the_other_is_stopped_and_its_log_shown(tmp_path: Path, capsys: pytest.CaptureFixture):
    port = free_port()
    healthy = servers.Server(
        name="Web", command=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        env={}, host="127.0.0.1", port=port, health_path="/", log=tmp_path / "web.log",
    )
    dying = servers.Server(
        name="Dying", command=[sys.executable, "-c", "import sys, time; time.sleep(1); print('out of luck'); sys.exit(3)"],
        env={}, host="127.0.0.1", port=free_port(), health_path="/", log=tmp_path / "dying.log",
    )
    assert servers.serve([healthy, dying], dict(os.environ), ready="ready") == 1
    err = capsys.readouterr().err
    assert "the Dying server stopped with exit code 3" in err and "out of luck" in err
    assert not listening(port)


def test_a_flow_on_the_temporary_server_links_no_ui_page():
    script = ("import json; from prefect import flow; from tasks.tracking import flow_run_tags; "
              "print(json.dumps(flow(flow_run_tags)()))")
    environ = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_URL")}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    tags = json.loads(done.stdout.strip().splitlines()[-1])
    assert tags["prefect.flow_run_id"] and tags["prefect.flow_run_name"]
    assert "prefect.flow_run_url" not in tags
