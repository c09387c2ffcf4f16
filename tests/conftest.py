"""Session-wide set-up: the suite runs on one pytest-xdist worker per core, each worker a
one-core machine; what costs a server start or a pipeline run is made once per worker and
shared. The modules that read the small run share a worker, so it is made once."""
from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import tempfile

import pytest
from small_project import GRANULAR, SmallRun, granular_server, run_command, small_dvc_project

from flows.cli import TOOL_DEFAULTS

# The same tool settings the `granular` command uses, before any test starts a server.
for name, value in TOOL_DEFAULTS.items():
    os.environ.setdefault(name, value)

SMALL_RUN_MODULES = {"test_dvc", "test_flow", "test_servers"}


def _pin_worker_to_its_cores() -> None:
    """Give each xdist worker its share of the cores, inherited by every process it starts:
    the trainings then size their threads to that share, and two workers' PyTorch threads
    never spin against each other (two trainings sharing these 2 cores fell from ~1,650 to
    28-730 images/s here)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker is None or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    share = cores[int(worker.removeprefix("gw")) % count :: count]
    if share:
        os.sched_setaffinity(0, share)
    # Each worker's temporary Prefect servers keep their state apart, and leave none behind.
    home = tempfile.mkdtemp(prefix=f"prefect-home-{worker}-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ["PREFECT_HOME"] = home


_pin_worker_to_its_cores()

# A shell that starts the tests in the background (`make test &` without job control) ignores
# SIGINT for them and every process they start: put back Python's Ctrl-C, which the interruption
# tests send as a terminal does (processes started from here then get the default again).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Each module's tests on one worker, as --dist loadfile does (its module fixtures are made
    once), and the modules that read the small run on the same one, so it is made once.
    (Not --dist loadgroup: with pytest 9 it no longer keeps a group together.)"""
    from xdist.scheduler import LoadFileScheduling

    class ModuleScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return "small-run" if path.rsplit("/", 1)[-1].removesuffix(".py") in SMALL_RUN_MODULES else path

    return ModuleScheduling(config, log)


@pytest.fixture(scope="session")
def prefect_test_server():
    """One temporary Prefect server for every flow run in the test process: each start costs
    10-15 s here. It stays the process's API from the first test that asks for it on."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> SmallRun:
    """The small run, made once: `granular run` as its own process in a git + DVC project,
    against `granular server` (real Prefect and MLflow servers), with the exported variables a
    user pastes. The flow, server and DVC tests read it; a test that changes it works on a copy."""
    root = tmp_path_factory.mktemp("small-run") / "project"
    small_dvc_project(root)
    with granular_server(root) as servers:
        exports = servers.exports()
        env = {**os.environ, **exports, "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.2"}  # tiny trainings are short
        stdout = run_command([GRANULAR, "run", "--root", str(root)], cwd=root, env=env)
        mlflow_run_id, uri = re.search(r"^MLflow run:\s+(\w+) in (\S+)$", stdout, re.MULTILINE).groups()
        yield SmallRun(root, servers, stdout, mlflow_run_id, uri, exports["PREFECT_API_URL"])
