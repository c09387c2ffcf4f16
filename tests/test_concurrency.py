"""Concurrent runs on one project: the project lock (granular/runtime/project_lock.py) makes a run wait
for the one writing, names it, gives up after orchestration.lock_timeout_s, and is free at once
when its holder is killed; four `granular run` started at the same moment on a fresh project
all finish, each with its whole record, the last three from the task cache.

The four runs share one real Prefect server: the test harness's, a uvicorn process on loopback
(about 12 s to start here, against 20-50 s for `prefect server start`). Four processes with a
temporary server each would start four servers at once on two cores and would not be one
backend, which is the setting to check: a shared `granular server`."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from granular.config import load_config
from granular.runtime.project_lock import ProjectBusy, hold_project, read_holder
from granular.store.paths import ProjectPaths

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
RUNS = 4
RUN_TIMEOUT_S = 300  # all four together; about 1.5 min here

# Holds the project's lock as run argv[2] for argv[3] seconds, saying when it has it.
HOLDER = """
import sys, time
from pathlib import Path
from granular.store.paths import ProjectPaths
from granular.runtime.project_lock import hold_project
with hold_project(ProjectPaths(Path(sys.argv[1])), run=sys.argv[2]):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def start_holder(root: Path, run: str, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), run, str(seconds)], cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held", "the holder process did not take the lock"
    return holder


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


def test_a_run_waits_for_the_holder_and_gives_up_naming_it(tmp_path: Path):
    paths = ProjectPaths(tmp_path)
    holder = start_holder(tmp_path, "brave-fox", 60)
    said: list[str] = []
    try:
        started = time.monotonic()
        with pytest.raises(ProjectBusy) as busy:
            with hold_project(paths, "second", timeout_s=1.0, log=said.append):
                pytest.fail("the lock was taken while another process held it")
        waited = time.monotonic() - started
    finally:
        stop(holder)
    who = rf"run 'brave-fox' \(pid {holder.pid} on {re.escape(socket.gethostname())}, since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\)"
    assert re.search(rf"held by {who}; gave up waiting after orchestration.lock_timeout_s = 1 s", str(busy.value))
    assert waited >= 1.0
    assert len(said) == 1 and re.search(rf"is held by {who}: waiting for it to finish", said[0])


def test_the_lock_of_a_killed_run_is_free_at_once(tmp_path: Path):
    paths = ProjectPaths(tmp_path)
    holder = start_holder(tmp_path, "killed", 60)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert read_holder(paths.run_lock).pid == holder.pid  # its name is still there, its lock is not
    started = time.monotonic()
    with hold_project(paths, "next", timeout_s=0) as me:
        assert time.monotonic() - started < 0.5
        assert read_holder(paths.run_lock) == me and me.pid == os.getpid()
    assert read_holder(paths.run_lock) is None  # released: names no one


def test_a_waiting_run_goes_on_when_the_holder_finishes(tmp_path: Path):
    paths = ProjectPaths(tmp_path)
    holder = start_holder(tmp_path, "short", 1.5)
    said: list[str] = []
    started = time.monotonic()
    try:
        with hold_project(paths, "patient", log=said.append):  # no limit
            waited = time.monotonic() - started
        holder.wait(timeout=10)
    finally:
        stop(holder)
    assert holder.returncode == 0 and waited >= 1.0  # it held the lock 1.5 s after saying so
    assert len(said) == 1 and "run 'short'" in said[0]


# --- four runs at once ------------------------------------------------------------------------

def tiny_params() -> dict:
    """The repository's params.yaml, made tiny: two views, 200 examples per split, one narrow
    epoch, no student, one fusion strategy."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["views"] = {"fine-14": {"level": "fine", "resolution": 14}, "coarse-28": {"level": "coarse", "resolution": 28}}
    params["data"]["limit"] = 200
    params["validate"]["min_per_class"] = 5
    params["split"].update(val_fraction=0.2, folds=2)  # 4 validation examples per class: 2 per fold
    params["train"].update(epochs=1, width=4)
    params["distill"]["enabled"] = False
    params["fusion"]["strategy"] = "product"
    return params


@pytest.fixture
def prefect_api_url(prefect_test_server):
    """One Prefect server for the four runs (see the module's docstring): the session's."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.fixture
def fresh_project(tmp_path: Path) -> Path:
    """No MLflow store, no data, no task cache: everything is created by the runs themselves."""
    assert FASHION_MNIST.is_dir(), "the real dataset is needed: apt-get install dataset-fashion-mnist"
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    shutil.copy(REPO / "data" / "taxonomy.yaml", root / "data" / "taxonomy.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    return root


def start_runs(root: Path, api_url: str, count: int) -> list[tuple[subprocess.Popen, Path]]:
    env = {name: value for name, value in os.environ.items() if name != "MLFLOW_TRACKING_URI"}
    env.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(root.parent / "prefect-home"))
    runs = []
    for number in range(count):
        log = root.parent / f"run-{number}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "flows.cli", "run", "--root", str(root)],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        runs.append((process, log))
    return runs


def wait_for_all(runs: list[tuple[subprocess.Popen, Path]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    try:
        for process, log in runs:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"a run did not end within {timeout_s:.0f} s; the end of {log}:\n{log.read_text()[-3000:]}")
    finally:
        for process, _ in runs:
            stop(process)


@pytest.mark.slow
def test_four_runs_at_once_on_a_fresh_project_all_finish_whole(fresh_project: Path, prefect_api_url: str):
    started = time.perf_counter()
    runs = start_runs(fresh_project, prefect_api_url, RUNS)
    wait_for_all(runs, RUN_TIMEOUT_S)
    print(f"\n{RUNS} concurrent runs: {time.perf_counter() - started:.1f} s")
    for process, log in runs:
        assert process.returncode == 0, f"a run failed; the end of {log}:\n{log.read_text()[-3000:]}"
    outputs = [log.read_text() for _, log in runs]
    assert any(" is held by run " in output for output in outputs), "no run waited for another"

    metrics = json.loads((fresh_project / "data/evaluation/metrics.json").read_text())  # whole, not torn
    config = load_config(fresh_project / "params.yaml")  # the experiment and model name the runs record under
    client = MlflowClient(f"sqlite:///{fresh_project / 'mlruns.db'}")
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    runs_found = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs_found if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == RUNS and all(p.info.status == "FINISHED" for p in parents)
    test_scores = [{k: v for k, v in p.data.metrics.items() if k.startswith("test.")} for p in parents]
    expected = {f"test.{model}.accuracy" for model in ("fine-14", "coarse-28", "fused")}
    assert expected <= set(test_scores[0])
    assert all(scores == test_scores[0] for scores in test_scores), "the runs' test metrics differ"
    assert test_scores[0]["test.fused.accuracy"] == pytest.approx(metrics["test"]["fused"]["accuracy"])
    assert all(p.data.params == parents[0].data.params for p in parents) and parents[0].data.params["data.limit"] == "200"

    # The first run to hold the project trained the views; the three after it took them from the cache.
    hits = sorted(int(p.data.metrics["cache.hits"]) for p in parents)
    assert hits[0] == 0 and hits[1] == hits[2] == hits[3] > 0
    cached = [set(p.data.tags["granular.cache.hits"].split(", ")) for p in parents if p.data.metrics["cache.hits"]]
    assert all({"train_view[fine-14]", "train_view[coarse-28]", "evaluate_models"} <= names for names in cached)
    assert len([r for r in runs_found if "mlflow.parentRunId" in r.data.tags]) == 2  # one per view, trained once

    versions = client.search_model_versions(f"name='{config.serving.model_name}'")
    assert sorted(int(v.version) for v in versions) == list(range(1, RUNS + 1))
    assert {v.run_id for v in versions} == {p.info.run_id for p in parents}
