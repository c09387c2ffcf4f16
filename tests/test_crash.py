"""Crash hygiene, with real processes: a `granular run` stopped by SIGTERM or SIGINT ends its
MLflow runs KILLED and its Prefect flow run Crashed; one killed outright is found and closed by
the next run; a stale DVC lock is cleared with a warning; a tracking server that is not there,
or goes away, fails the run quickly and names it, and one that comes back lets the run go on.

The runs report to one real Prefect server started for this module, so that a run and the
assertions read the same Prefect database.
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient
from small_project import FASHION_MNIST, REPO, free_port

from benchmarks.crash_runs import small_project
from flows import servers
from granular.config import load_config
from granular.runtime.dvc_state import repair_locks
from granular.runtime.processes import ProcessIdentity, current_process, start_ticks
from granular.store.paths import ProjectPaths
from tasks import crashes, registry, tracking
from tasks.versioning import _dvc

STARTUP_TIMEOUT_S = 150  # a server on a busy 2-core machine
RUN_TIMEOUT_S = 240
LONG_TRAINING = ["--set", "train.epochs=300"]  # about 20 s a view: time to stop it while it trains


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """A real Prefect server on loopback for every run of this module; its API URL."""
    server = servers.prefect_server(tmp_path_factory.mktemp("prefect"), "127.0.0.1", free_port())
    running = [(server, servers.start(server, dict(os.environ)))]
    try:
        servers.wait_until_answering(running, STARTUP_TIMEOUT_S)
        yield f"{server.url}/api"
    finally:
        servers.stop_all(running)


def tiny_project(folder: Path) -> Path:
    """Two views (fine-14, coarse-28) on 200 examples per split: a whole run takes seconds (the
    crash campaign's small project)."""
    assert FASHION_MNIST.is_dir(), "the real dataset is needed: apt-get install dataset-fashion-mnist"
    return small_project(folder)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return tiny_project(tmp_path / "project")


def start_run(project: Path, prefect_api: str, *args: str, **env: str) -> subprocess.Popen:
    """`granular run` on `project` in a process of its own, its output in project/run-N.log."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    environ.update(PREFECT_API_URL=prefect_api, PREFECT_HOME=str(project / ".prefect-client"), **env)
    log = project / f"run-{len(list(project.glob('run-*.log')))}.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", "--root", str(project), *args],
            cwd=REPO, env=environ, stdout=output, stderr=subprocess.STDOUT,
        )
    process.log = log
    return process


def finish(process: subprocess.Popen, timeout: float = RUN_TIMEOUT_S) -> str:
    """Wait for a run to end (killing it if it does not); its output."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"the run did not end within {timeout} s:\n{process.log.read_text()[-3000:]}")
    return process.log.read_text()


def wait_until_training(project: Path, process: subprocess.Popen, timeout: float = RUN_TIMEOUT_S) -> None:
    """Until a view has saved a checkpoint: training is under way."""
    deadline = time.monotonic() + timeout
    while not list((project / "data" / "checkpoints").glob("**/epoch-*.pt")):
        assert process.poll() is None, f"the run ended before training:\n{process.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


def stop_during_training(project: Path, prefect_api: str, sig: signal.Signals) -> tuple[int, str]:
    run = start_run(project, prefect_api, *LONG_TRAINING)
    try:
        wait_until_training(project, run)
        run.send_signal(sig)
        return run.wait(timeout=RUN_TIMEOUT_S), run.log.read_text()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def mlflow_runs(project: Path, uri: str | None = None) -> tuple[list, list]:
    """The parent runs and the child runs of the project's experiment (its params.yaml's), in its
    own store unless a server is named."""
    client = MlflowClient(uri or tracking.project_store_uri(ProjectPaths(project)))
    experiment = client.get_experiment_by_name(load_config(ProjectPaths(project).params).tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def read_flow_run(prefect_api: str, flow_run_id: str) -> dict:
    with urllib.request.urlopen(f"{prefect_api}/flow_runs/{flow_run_id}", timeout=30) as response:
        return json.load(response)


def read_task_runs(prefect_api: str, flow_run_id: str) -> list[dict]:
    body = json.dumps({"flow_runs": {"id": {"any_": [flow_run_id]}}}).encode()
    request = urllib.request.Request(
        f"{prefect_api}/task_runs/filter", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.mark.parametrize("sig, reason, prefect_message", [
    (signal.SIGTERM, "stopped by SIGTERM", "termination signal"),
    (signal.SIGINT, "interrupted (SIGINT)", "interrupt signal"),
])
@pytest.mark.slow
def test_a_signal_during_training_ends_the_runs_killed_and_the_flow_run_crashed(
    project: Path, prefect_api: str, sig: signal.Signals, reason: str, prefect_message: str
):
    returncode, output = stop_during_training(project, prefect_api, sig)
    assert returncode != 0, output[-3000:]

    [parent], children = mlflow_runs(project)
    assert parent.info.status == "KILLED", output[-3000:]
    assert parent.data.tags[crashes.STOP_REASON_TAG] == reason
    assert children, "no view's run was open"
    for child in children:
        assert (child.info.status, child.data.tags.get(crashes.STOP_REASON_TAG)) == ("KILLED", reason)
    state = read_flow_run(prefect_api, parent.data.tags["prefect.flow_run_id"])["state"]
    assert state["type"] in ("CRASHED", "CANCELLED")
    assert prefect_message in state["message"]
    assert f"{reason}: MLflow run {parent.info.run_id} and {len(children)} child run(s) marked KILLED" in output


@pytest.mark.slow
def test_a_run_killed_outright_is_closed_by_the_next_run(project: Path, prefect_api: str):
    killed = start_run(project, prefect_api, *LONG_TRAINING)
    try:
        wait_until_training(project, killed)
    finally:
        killed.kill()
        killed.wait()
    [stale], [stale_child] = mlflow_runs(project)
    assert (stale.info.status, stale_child.info.status) == ("RUNNING", "RUNNING")  # nothing could close them
    stale_flow_run_id = stale.data.tags["prefect.flow_run_id"]
    assert read_flow_run(prefect_api, stale_flow_run_id)["state"]["type"] == "RUNNING"

    output = finish(start_run(project, prefect_api))
    assert "runs left open by processes that no longer exist, now closed" in output, output[-3000:]

    parents, children = mlflow_runs(project)
    new = next(run for run in parents if run.info.run_id != stale.info.run_id)
    assert new.info.status == "FINISHED", output[-3000:]
    stale = next(run for run in parents if run.info.run_id == stale.info.run_id)
    reason = stale.data.tags[crashes.STOP_REASON_TAG]
    assert re.fullmatch(
        rf"process {killed.pid} on {re.escape(socket.gethostname())} ended without closing this run; "
        rf"found by run {new.info.run_id} at \d{{4}}-\d\d-\d\dT.+", reason,
    )
    stale_child = next(run for run in children if run.info.run_id == stale_child.info.run_id)
    assert (stale.info.status, stale_child.info.status) == ("KILLED", "KILLED")
    assert stale_child.data.tags[crashes.STOP_REASON_TAG] == reason
    # Its flow run is found first by the tags it was created with, before MLflow is read.
    flow_run = read_flow_run(prefect_api, stale_flow_run_id)
    assert flow_run["state"]["type"] == "CRASHED"
    assert re.fullmatch(
        rf"process {killed.pid} on {re.escape(socket.gethostname())} ended without closing this flow run; "
        rf"found by flow run {new.data.tags['prefect.flow_run_id']} at \d{{4}}-\d\d-\d\dT.+", flow_run["state"]["message"],
    )
    assert not {"RUNNING", "PENDING"} & {task_run["state"]["type"] for task_run in read_task_runs(prefect_api, stale_flow_run_id)}


@pytest.fixture
def store(tmp_path: Path) -> tuple[MlflowClient, str, str]:
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    return *tracking.open_experiment(uri, "granular", tmp_path / "art"), uri


def _open_run(client: MlflowClient, experiment_id: str, process: ProcessIdentity, **tags: str) -> str:
    return client.create_run(experiment_id, tags={**tracking.process_tags(process), **tags}).info.run_id


def test_only_runs_of_processes_that_are_gone_are_closed(store, tmp_path: Path):
    client, experiment_id, uri = store
    me = current_process()
    concurrent = subprocess.Popen(["sleep", "60"])  # a run going on beside this one
    ended = subprocess.Popen(["true"])
    try:
        ended.wait()
        live = _open_run(client, experiment_id, ProcessIdentity(me.host, concurrent.pid, start_ticks(concurrent.pid)))
        dead = _open_run(client, experiment_id, ProcessIdentity(me.host, ended.pid, "12345"))
        dead_child = client.create_run(experiment_id, tags={"mlflow.parentRunId": dead}).info.run_id
        reused_pid = _open_run(client, experiment_id, ProcessIdentity(me.host, me.pid, "1"))  # another start time
        elsewhere = _open_run(client, experiment_id, ProcessIdentity("another-host", ended.pid, None))
        untagged = client.create_run(experiment_id).info.run_id
        parent = tracking.RunRef(uri, experiment_id, _open_run(client, experiment_id, me))

        marked = crashes.close_stale_runs(parent, logging.getLogger("test"))
    finally:
        concurrent.kill()
        concurrent.wait()

    status = {run_id: client.get_run(run_id).info.status for run_id in
              (live, dead, dead_child, reused_pid, elsewhere, untagged, parent.run_id)}
    assert status == {live: "RUNNING", dead: "KILLED", dead_child: "KILLED", reused_pid: "KILLED",
                      elsewhere: "RUNNING", untagged: "RUNNING", parent.run_id: "RUNNING"}
    assert len(marked) == 2 and f"MLflow run {dead} " in marked[0] + marked[1]
    reason = client.get_run(dead).data.tags[crashes.STOP_REASON_TAG]
    assert reason.startswith(f"process {ended.pid} on {me.host} ended without closing this run; found by run {parent.run_id} at ")
    assert client.get_run(dead_child).data.tags[crashes.STOP_REASON_TAG] == reason


def test_a_ctrl_c_that_the_engine_turns_into_an_error_of_its_own_still_ends_the_run_interrupted(store):
    # Prefect's engine, hit by Ctrl-C as it opened the next task run, once raised
    # ValueError('Task run is not set'): the run must still end KILLED, Crashed and exit 130.
    client, experiment_id, uri = store
    parent = tracking.RunRef(uri, experiment_id, _open_run(client, experiment_id, current_process()))
    engine_error = ValueError("Task run is not set")
    assert crashes.stop_reason(engine_error) is None  # no signal: a failure of the run's own
    with crashes.stop_signals_raise():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)  # the signal's handler raises here
        stop = crashes.end_parent_run(parent, engine_error, logging.getLogger("test"))
    assert type(stop) is KeyboardInterrupt and stop.__cause__ is engine_error
    run = client.get_run(parent.run_id)
    assert (run.info.status, run.data.tags[crashes.STOP_REASON_TAG]) == ("KILLED", "interrupted (SIGINT)")
    assert crashes.stop_reason(engine_error) is None  # the block forgets its signals when it ends


@pytest.mark.parametrize("how", ["Ctrl-C after the registration", "killed outright after the registration"])
def test_a_version_registered_by_a_run_that_did_not_finish_says_so(store, tmp_path: Path, how: str):
    client, experiment_id, uri = store
    ended = subprocess.Popen(["true"])
    ended.wait()
    process = current_process() if how.startswith("Ctrl-C") else ProcessIdentity(current_process().host, ended.pid, "12345")
    parent = tracking.RunRef(uri, experiment_id, _open_run(client, experiment_id, process))
    client.create_registered_model("granular-fused")
    version = client.create_model_version("granular-fused", source=str(tmp_path / "model"), run_id=parent.run_id).version
    if how.startswith("Ctrl-C"):
        crashes.end_parent_run(parent, KeyboardInterrupt(), logging.getLogger("test"))
    else:
        later = tracking.RunRef(uri, experiment_id, _open_run(client, experiment_id, current_process()))
        crashes.close_stale_runs(later, logging.getLogger("test"))
    registered = client.get_model_version("granular-fused", version)
    assert client.get_run(parent.run_id).info.status == "KILLED"
    assert registered.tags[registry.UNFINISHED_TAG] == client.get_run(parent.run_id).data.tags[crashes.STOP_REASON_TAG]
    assert registered.description.startswith(f"Registered by run {parent.run_id}, which did not finish: ")


def _dvc_repo(folder: Path) -> ProjectPaths:
    """A DVC project with one stage that takes a minute."""
    folder.mkdir()
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=folder, check=True)
    (folder / "in.txt").write_text("in\n")
    (folder / "dvc.yaml").write_text(
        "stages:\n  slow:\n    cmd: sleep 60 && cp in.txt out.txt\n    deps: [in.txt]\n    outs: [out.txt]\n"
    )
    return ProjectPaths(folder)


def test_a_dvc_killed_outright_leaves_a_lock_that_the_next_dvc_call_clears_with_a_warning(tmp_path: Path):
    paths = _dvc_repo(tmp_path / "repo")
    rwlock = paths.root / ".dvc" / "tmp" / "rwlock"
    dvc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "-q"], cwd=paths.root)
    try:
        deadline = time.monotonic() + 60
        # Until the stage runs: DVC rewrites the lock file while it takes its locks, so a kill
        # before then can land between the truncation and the write and leave it empty.
        while not (psutil.Process(dvc.pid).children(recursive=True) and rwlock.is_file() and '"write"' in rwlock.read_text()):
            assert time.monotonic() < deadline and dvc.poll() is None, "dvc repro took no lock"
            time.sleep(0.05)
        stage = psutil.Process(dvc.pid).children(recursive=True)  # DVC's stage lives on after DVC
    finally:
        dvc.kill()
        dvc.wait()
    for process in stage:
        process.kill()
    assert str(dvc.pid) in rwlock.read_text()  # the lock names the dead process

    (paths.root / "out.txt").write_text("in\n")
    warnings = []
    done = _dvc(paths, "commit", "--force", "--quiet", warn=warnings.append)
    assert done.returncode == 0, done.stderr
    assert len(warnings) == 1
    assert str(rwlock) in warnings[0] and f"process {dvc.pid} " in warnings[0] and "no longer exists" in warnings[0]
    assert str(dvc.pid) not in rwlock.read_text()


def test_dead_entries_go_and_live_ones_stay_in_a_hand_written_rwlock(tmp_path: Path):
    (tmp_path / ".dvc" / "tmp").mkdir(parents=True)
    rwlock = tmp_path / ".dvc" / "tmp" / "rwlock"
    ended = subprocess.Popen(["true"])
    ended.wait()
    alive = {"pid": os.getpid(), "cmd": "dvc repro"}
    rwlock.write_text(json.dumps({
        "write": {"data/a": {"pid": ended.pid, "cmd": "dvc repro"}},
        "read": {"data/b": [alive, {"pid": ended.pid, "cmd": "dvc repro"}]},
    }))
    [message] = repair_locks(tmp_path)
    assert f"process {ended.pid} ('dvc repro')" in message and "write data/a, read data/b" in message
    assert json.loads(rwlock.read_text()) == {"write": {}, "read": {"data/b": [alive]}}
    assert repair_locks(tmp_path) == []

    rwlock.write_text("")  # left empty by a process killed while writing it: still removed
    assert "empty" in repair_locks(tmp_path)[0] and not rwlock.exists()


@pytest.mark.slow
def test_no_tracking_server_at_start_fails_at_once_naming_it(project: Path, prefect_api: str):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    run = start_run(project, prefect_api, MLFLOW_TRACKING_URI=uri)
    output = finish(run, timeout=120)
    seconds = time.monotonic() - started
    assert run.returncode != 0
    assert f"no MLflow tracking server answers at {uri} (set by MLFLOW_TRACKING_URI)" in output
    assert "`granular server`" in output and "unset MLFLOW_TRACKING_URI" in output
    assert not (project / "data" / "raw").exists()  # it stopped before the first step
    # MLflow's own retries would wait about 4 minutes; the whole process here is mostly imports.
    assert seconds < 60, seconds


def start_mlflow(root: Path, port: int) -> list[tuple[servers.Server, subprocess.Popen]]:
    server = servers.mlflow_server(
        root, "127.0.0.1", port, tracking.project_store_uri(ProjectPaths(root)), tracking.artifact_root(ProjectPaths(root))
    )
    running = [(server, servers.start(server, dict(os.environ)))]
    try:
        servers.wait_until_answering(running, STARTUP_TIMEOUT_S)
    except servers.ServerError:
        servers.stop_all(running)
        raise
    return running


def kill_server(running: list[tuple[servers.Server, subprocess.Popen]]) -> None:
    for _, process in running:
        servers.signal_group(process, signal.SIGKILL)
        process.wait()


@pytest.fixture
def mlflow_store(tmp_path: Path):
    """A folder for an MLflow server's store; the servers started on it are stopped afterwards."""
    root = tmp_path / "mlflow"
    root.mkdir()
    tracking.open_experiment(tracking.project_store_uri(ProjectPaths(root)), "granular", tracking.artifact_root(ProjectPaths(root)))
    started: list = []
    yield root, started
    for running in started:
        servers.stop_all(running, grace_s=5)


@pytest.mark.slow
def test_a_tracking_server_lost_mid_run_fails_it_naming_the_server(project: Path, prefect_api: str, mlflow_store):
    root, started = mlflow_store
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    started.append(start_mlflow(root, port))
    # Retries set by the user are kept: 2, about 2 s per call instead of our 30 s.
    run = start_run(project, prefect_api, *LONG_TRAINING, MLFLOW_TRACKING_URI=uri,
                    MLFLOW_HTTP_REQUEST_MAX_RETRIES="2", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1")
    try:
        wait_until_training(project, run)
        kill_server(started[-1])
        lost = time.monotonic()
        output = finish(run, timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    assert f"the MLflow tracking server at {uri} stopped answering during the run" in output, output[-3000:]
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES=2" in output
    assert time.monotonic() - lost < 120


@pytest.mark.slow
def test_a_tracking_server_back_within_the_retries_lets_the_run_finish(project: Path, prefect_api: str, mlflow_store):
    root, started = mlflow_store
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    started.append(start_mlflow(root, port))
    # 7 retries, about 2 minutes: a restart on a busy machine has taken 30 s, our default window.
    run = start_run(project, prefect_api, "--set", "train.epochs=20", MLFLOW_TRACKING_URI=uri,
                    MLFLOW_HTTP_REQUEST_MAX_RETRIES="7", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1")
    try:
        wait_until_training(project, run)
        kill_server(started[-1])
        started.append(start_mlflow(root, port))  # back after the seconds a start takes
        output = finish(run)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output[-3000:]
    assert not (project / "mlruns.db").exists()  # all went to the server the environment names
    [parent], children = mlflow_runs(project, uri)
    assert parent.info.status == "FINISHED"
    assert {child.info.status for child in children} == {"FINISHED"}
    assert parent.data.params["train.epochs"] == "20"


def test_mlflow_retries_are_bounded_unless_the_user_set_them(monkeypatch: pytest.MonkeyPatch):
    for name in tracking.HTTP_RETRY_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")
    assert tracking.bound_http_retries() == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "9",  # the user's
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": tracking.HTTP_RETRY_DEFAULTS["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"],
        "MLFLOW_HTTP_REQUEST_TIMEOUT": tracking.HTTP_RETRY_DEFAULTS["MLFLOW_HTTP_REQUEST_TIMEOUT"],
    }


WAITING_FLOW = """
import sys, time
from prefect import flow
from tasks.crashes import stop_signals_raise

@flow
def wait():
    print("started", flush=True)
    time.sleep(120)

with stop_signals_raise():
    wait()
"""


@pytest.mark.slow
def test_sigterm_on_a_flow_on_the_temporary_server_stops_that_server_too(tmp_path: Path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # the temporary server
    flow_process = subprocess.Popen(
        [sys.executable, "-c", WAITING_FLOW], cwd=REPO, env={**environ, "PREFECT_HOME": str(tmp_path)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        for line in flow_process.stdout:  # Prefect's lines first
            if line.startswith("started"):
                break
        temporary_server = psutil.Process(flow_process.pid).children(recursive=True)
        assert temporary_server
        flow_process.send_signal(signal.SIGTERM)
        output = flow_process.communicate(timeout=60)[0]
    finally:
        if flow_process.poll() is None:
            flow_process.kill()
    assert flow_process.returncode == 1, output  # TerminationSignal raised to the top, not killed by the signal
    _, alive = psutil.wait_procs(temporary_server, timeout=30)
    for process in alive:
        process.kill()
    assert not alive, "the temporary Prefect server outlived the flow's process"


def start_run_in_a_terminal(project: Path, *args: str) -> subprocess.Popen:
    """`granular run` as a terminal starts it: a process group of its own (the terminal's
    foreground group, which Ctrl-C signals whole), and no Prefect server to report to, so the
    run starts its temporary one (its database the project's, under .granular/prefect/)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    environ["PREFECT_HOME"] = str(project / ".prefect-home")
    log = project / "terminal.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", "--root", str(project), *args],
            cwd=REPO, env=environ, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    process.log = log
    return process


def temporary_server(run: subprocess.Popen) -> psutil.Process:
    found = re.search(r"temporary Prefect server on \S+ \(pid (\d+)", run.log.read_text())
    assert found, f"the run named no temporary server:\n{run.log.read_text()[-3000:]}"
    return psutil.Process(int(found.group(1)))


def wait_for_line(run: subprocess.Popen, text: str, timeout: float = RUN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while text not in run.log.read_text():
        assert run.poll() is None, f"the run ended before {text!r}:\n{run.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in the run's output"
        time.sleep(0.02)


def flow_run_state(project: Path, flow_run_id: str) -> str:
    """The flow run's state in the temporary server's database, read after the server is gone."""
    import sqlite3

    with sqlite3.connect(project / ".granular" / "prefect" / "prefect.db") as database:
        [(state,)] = database.execute("select state_type from flow_run where id = ?", (flow_run_id,)).fetchall()
    return state


def signal_the_group(run: subprocess.Popen, signum: int) -> tuple[int, float]:
    """Send `signum` to the run's whole process group; its exit status and the seconds it took."""
    sent = time.monotonic()
    os.killpg(run.pid, signum)
    return run.wait(timeout=RUN_TIMEOUT_S), time.monotonic() - sent


def kill_the_group(run: subprocess.Popen) -> None:
    """What a test leaves: no run still going."""
    if run.poll() is None:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()


@pytest.mark.parametrize("moment", ["during a training", "between two view trainings"])
@pytest.mark.slow
def test_ctrl_c_to_the_process_group_ends_the_run_in_seconds_with_true_records(project: Path, moment: str):
    run = start_run_in_a_terminal(project, *LONG_TRAINING)
    try:
        if moment == "during a training":
            wait_until_training(project, run)
        else:
            wait_for_line(run, "Task run 'train-fine-14' - Finished in state Completed()")
        server = temporary_server(run)
        returncode, seconds = signal_the_group(run, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
    finally:
        kill_the_group(run)
    output = run.log.read_text()
    assert returncode == 130, output[-3000:]
    assert seconds < 30, f"the run took {seconds:.0f} s to stop:\n{output[-3000:]}"
    assert output.rstrip().endswith("granular: interrupted (Ctrl-C)"), output[-3000:]
    [parent], _ = mlflow_runs(project)
    assert parent.info.status == "KILLED" and parent.data.tags[crashes.STOP_REASON_TAG] == "interrupted (SIGINT)"
    # The server outlived the signal (it is not in the run's group) long enough to record the crash.
    assert flow_run_state(project, parent.data.tags["prefect.flow_run_id"]) == "CRASHED"
    _, alive = psutil.wait_procs([server], timeout=30)
    assert not alive, "the temporary Prefect server outlived its run"
    if moment == "during a training":  # a rerun resumes it
        assert list((project / "data" / "checkpoints").glob("**/epoch-*.pt"))


@pytest.mark.parametrize("then", [None, signal.SIGINT], ids=["once", "then Ctrl-C while stopping"])
@pytest.mark.slow
def test_sigterm_to_the_process_group_ends_the_run_as_ctrl_c_does_with_exit_143(project: Path, tmp_path: Path, then):
    training = ["--set", "train.epochs=40"] if then is None else LONG_TRAINING  # the first is run again to its end
    run = start_run_in_a_terminal(project, *training)
    try:
        wait_until_training(project, run)
        if then is None:
            returncode, seconds = signal_the_group(run, signal.SIGTERM)  # as docker stop, systemd or a cancelled job
        else:  # an impatient operator: a second signal while the run records its stop
            sent = time.monotonic()
            os.killpg(run.pid, signal.SIGTERM)
            time.sleep(0.3)
            os.killpg(run.pid, then)
            returncode, seconds = run.wait(timeout=RUN_TIMEOUT_S), time.monotonic() - sent
    finally:
        kill_the_group(run)
    output = run.log.read_text()
    assert returncode == 143, output[-3000:]
    # About 3.4 s alone on 2 cores; the bound leaves room for the tests running beside this one.
    assert seconds < 10, f"the run took {seconds:.1f} s to stop:\n{output[-3000:]}"
    assert output.rstrip().endswith("granular: stopped (SIGTERM)"), output[-3000:]
    assert "Traceback" not in output and output.count("granular:") == 1, output[-3000:]
    [parent], _ = mlflow_runs(project)
    assert parent.info.status == "KILLED" and parent.data.tags[crashes.STOP_REASON_TAG] == "stopped by SIGTERM"
    assert flow_run_state(project, parent.data.tags["prefect.flow_run_id"]) == "CRASHED"
    assert list((project / "data" / "checkpoints").glob("**/epoch-*.pt"))  # a rerun resumes it
    if then is None:  # ... and ends as a run never stopped does, to the byte
        resumed, uninterrupted = start_run_in_a_terminal(project, *training), None
        try:
            assert resumed.wait(timeout=RUN_TIMEOUT_S) == 0, resumed.log.read_text()[-3000:]
            uninterrupted = start_run_in_a_terminal(tiny_project(tmp_path / "uninterrupted"), *training)
            assert uninterrupted.wait(timeout=RUN_TIMEOUT_S) == 0, uninterrupted.log.read_text()[-3000:]
        finally:
            for process in (resumed, uninterrupted):
                if process is not None:
                    kill_the_group(process)
        metrics = Path("data") / "evaluation" / "metrics.json"
        assert (project / metrics).read_bytes() == (tmp_path / "uninterrupted" / metrics).read_bytes()


@pytest.mark.slow
def test_a_run_killed_outright_takes_its_temporary_server_with_it(project: Path):
    run = start_run_in_a_terminal(project, *LONG_TRAINING)
    try:
        wait_until_training(project, run)
        server = temporary_server(run)
    finally:
        run.kill()  # SIGKILL: what the out-of-memory killer sends
        run.wait()
    _, alive = psutil.wait_procs([server], timeout=30)
    for process in alive:
        process.kill()
    assert not alive, "the temporary Prefect server outlived its killed run, holding its port"


@pytest.mark.slow
def test_a_kill_while_the_tracking_store_is_made_leaves_a_project_that_runs(project: Path):
    """MLflow creates and migrates a new SQLite store for seconds; a SIGKILL then used to leave it
    half-migrated, and every later run failed ("table assessments already exists")."""
    store = project / "mlruns.db"
    making = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from tasks.tracking import open_experiment; "
         "open_experiment(sys.argv[1], 'granular', Path(sys.argv[2]))", f"sqlite:///{store}", str(project / "mlartifacts")],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    side_file = project / "mlruns.db.making"
    deadline = time.monotonic() + 60
    while not side_file.exists() and making.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    making.kill()
    making.wait()
    assert side_file.exists() and not store.exists()  # killed while MLflow made the tables

    run = start_run_in_a_terminal(project)
    try:
        assert run.wait(timeout=RUN_TIMEOUT_S) == 0, run.log.read_text()[-3000:]
    finally:
        kill_the_group(run)
    [parent], _ = mlflow_runs(project)
    assert parent.info.status == "FINISHED" and not side_file.exists()


def test_a_damaged_tracking_store_is_named_with_what_to_do(tmp_path: Path):
    store = tmp_path / "mlruns.db"
    store.write_bytes(b"not a database" * 100)
    with pytest.raises(tracking.TrackingStoreDamaged, match=rf"{re.escape(str(store))} cannot be opened.*mv {re.escape(str(store))}"):
        tracking.open_experiment(f"sqlite:///{store}", "granular", tmp_path / "mlartifacts")


@pytest.mark.parametrize("after_s", [0.0, 0.3, 0.8])
@pytest.mark.slow
def test_a_kill_in_a_flow_run_s_first_second_is_closed_by_the_next_run(project: Path, after_s: float):
    """Killed before it had an MLflow run, a flow run used to stay RUNNING for ever: the next run
    finds it by the tags it was created with."""
    run = start_run_in_a_terminal(project)
    try:
        wait_for_line(run, "Beginning flow run")
        time.sleep(after_s)
    finally:
        kill_the_group(run)
    rerun = start_run_in_a_terminal(project)
    try:
        assert rerun.wait(timeout=RUN_TIMEOUT_S) == 0, rerun.log.read_text()[-3000:]
    finally:
        kill_the_group(rerun)
    import sqlite3

    with sqlite3.connect(project / ".granular" / "prefect" / "prefect.db") as database:
        states = [state for (state,) in database.execute("select state_type from flow_run order by created")]
        open_tasks = database.execute("select count(*) from task_run where state_type in ('RUNNING', 'PENDING')").fetchone()[0]
    assert states == ["CRASHED", "COMPLETED"] and open_tasks == 0, (states, open_tasks)
    assert "flow runs left open by processes that no longer exist, now Crashed" in rerun.log.read_text()


@pytest.mark.slow
def test_kills_at_random_moments_leave_true_records_and_the_same_metrics(tmp_path: Path):
    """A handful of benchmarks/crash_runs.py's kills (fifty, there, for the docs)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "crash_runs.py"), "--kills", "3", "--seed", "7", "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=3600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    killed = summary["kills"] + summary["missed_a_run_already_ended"]  # every project, killed alive or not
    assert summary["kills"] == 3, done.stdout
    assert summary["identical_metrics"] == killed and summary["ran_again_without_help"] == killed, done.stdout
    assert summary["records_left_running"] == 0 and summary["processes_left"] == 0, done.stdout
