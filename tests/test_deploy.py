"""`granular deploy`: the scheduled deployment it registers, read back through the Prefect API;
the schedules and settings it refuses before contacting any server; and, served by a real
`granular deploy` process, runs that never overlap."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, State
from prefect.client.schemas.responses import DeploymentResponse
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, Cancelling
from small_project import FASHION_MNIST, REPO, SMALL_RUN  # runs stay short even if a cancellation went wrong

import flows.deploy
from flows.cli import TOOL_DEFAULTS
from flows.cli import main as granular_cli


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with the repository's params.yaml."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """`granular deploy` registers its deployment (`apply`) instead of serving it forever; each
    registration is recorded with the environment that served runs would inherit."""
    registrations = []

    def register(deployment, **options):
        deployment.apply()
        registrations.append({"options": options, "env": {key: os.environ.get(key) for key in TOOL_DEFAULTS}})

    monkeypatch.setattr(flows.deploy, "serve", register)
    return registrations


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch):
    """An API address where nothing listens, and no serving: any contact with a server fails."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(flows.deploy, "serve", lambda *_, **__: pytest.fail("the command went on to serve"))
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
        yield


@pytest.mark.slow
def test_deploy_registers_the_schedule_parameters_and_one_run_at_a_time(
    prefect_test_server, project: Path, registered: list[dict], capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    for key in TOOL_DEFAULTS:  # unset here, and unset again after the test
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    monkeypatch.chdir(project)  # a relative --root must reach the deployment as an absolute path
    overrides = ["distill.epochs=1", "data.limit=600"]
    argv = ["deploy", "--cron", "30 4 * * 1-5", "--timezone", "Europe/Paris", "--name", "weekdays", "--root", "."]
    assert granular_cli(argv + [a for o in overrides for a in ("--set", o)]) == 0

    printed = capsys.readouterr().out
    assert "granular/weekdays" in printed and "'30 4 * * 1-5' in Europe/Paris" in printed
    assert "T04:30+01:00" in printed or "T04:30+02:00" in printed  # next runs, in Paris time
    assert registered == [{"options": {"pause_on_shutdown": True}, "env": TOOL_DEFAULTS}]

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("granular/weekdays")
    (schedule,) = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == (
        "30 4 * * 1-5", "Europe/Paris", True,
    )
    assert deployment.parameters == {"root": str(project.resolve()), "params": None, "overrides": overrides}
    assert deployment.entrypoint == "flows.pipeline.granular_pipeline"
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE


@pytest.mark.slow
def test_deploying_again_replaces_the_schedule_and_resumes(prefect_test_server, project: Path):
    """A second `granular deploy` of the same name updates the deployment, not adds to it, and
    resumes it where stopping the first one paused it."""
    first = flows.deploy.build_deployment("replaced", "0 3 * * *", "UTC", str(project), None, []).apply()
    with get_client(sync_client=True) as client:
        client.pause_deployment(first)  # as serving does on shutdown
        second = flows.deploy.build_deployment("replaced", "15 2 * * 0", "UTC", str(project), None, []).apply()
        deployment = client.read_deployment_by_name("granular/replaced")
    assert second == first
    assert [s.schedule.cron for s in deployment.schedules] == ["15 2 * * 0"]
    assert not deployment.paused


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--cron", "0 3 * *"], 'cannot deploy: Invalid cron string: "0 3 * *"'),
        (["--cron", "61 3 * * *"], 'cannot deploy: Invalid cron string: "61 3 * * *"'),
        (["--cron", "0 3 * * *", "--timezone", "Mars/Olympus"], 'Invalid timezone: "Mars/Olympus"'),
        (["--cron", "0 3 * * *", "--name", "a/b"], "Name 'a/b' contains an invalid character"),
        (["--cron", "0 3 * * *", "--set", "train.epochs"], "configuration error"),
        (["--cron", "0 3 * * *", "--set", "train.no_such_key=1"], "configuration error"),
    ],
)
def test_deploy_refuses_a_bad_schedule_or_setting_without_a_server(
    no_server, project: Path, options: list[str], message: str, capsys: pytest.CaptureFixture
):
    assert granular_cli(["deploy", "--root", str(project)] + options) == 2
    assert message in capsys.readouterr().err


def _wait_for(condition, timeout: float, what: str):
    """Poll `condition` every half second until it returns something true, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.5)
    pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}")


def _read_deployment(client: SyncPrefectClient, name: str) -> DeploymentResponse | None:
    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


@pytest.fixture
def served(prefect_test_server, project: Path):
    """`granular deploy` running as its own process against the test server, polling every
    second; stopped by Ctrl-C at the end, as a user would."""
    assert FASHION_MNIST.is_dir(), "the real dataset is needed: apt-get install dataset-fashion-mnist"
    (project / "data").mkdir()
    shutil.copy(REPO / "data" / "taxonomy.yaml", project / "data" / "taxonomy.yaml")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own store
    command = [sys.executable, "-m", "flows.cli", "deploy", "--cron", "0 3 1 1 *", "--name", "served",
               "--root", str(project)] + [a for o in SMALL_RUN for a in ("--set", o)]
    log = project / "deploy.log"  # a file, not a pipe that nobody reads and that could fill up
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(log.read_text()[-4000:])  # shown when the test fails


@pytest.mark.slow
def test_served_deployment_runs_one_run_at_a_time_and_the_other_waits(served: subprocess.Popen):
    with get_client(sync_client=True) as client:
        _wait_for(lambda: _read_deployment(client, "granular/served"), 60, "the deployment to be registered")
        runs = [run_deployment("granular/served", timeout=0).id for _ in range(2)]

        def states() -> dict[UUID, State]:
            return {run: client.read_flow_run(run).state for run in runs}

        def one_running_one_waiting():
            now = states()
            assert sum(state.is_running() for state in now.values()) <= 1, "two runs of the deployment overlapped"
            running = [run for run, state in now.items() if state.is_running()]
            waiting = [run for run, state in now.items() if state.name == "AwaitingConcurrencySlot"]
            return running and waiting and (running[0], waiting[0])

        running, waiting = _wait_for(one_running_one_waiting, 90, "one run running while the other waits")
        assert client.read_flow_run(running).parameters["overrides"] == SMALL_RUN  # from the command line
        # The pipeline itself is tested in test_flow.py: stop the run here, through the serving
        # process, which must end its subprocess; and drop the enqueued one.
        client.set_flow_run_state(running, Cancelling(), force=True)
        client.set_flow_run_state(waiting, Cancelled(), force=True)
        _wait_for(lambda: states()[running].is_cancelled(), 60, "the serving process to cancel the run")

    served.send_signal(signal.SIGINT)
    served.wait(timeout=30)
    with get_client(sync_client=True) as client:
        assert client.read_deployment_by_name("granular/served").paused, "runs would pile up with nothing serving"
