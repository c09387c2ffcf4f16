"""Session-wide fixtures: what costs a server start or a pipeline run is made once and shared."""
from __future__ import annotations

import os
import re

import pytest
from small_project import GRANULAR, SmallRun, granular_server, run_command, small_dvc_project

from flows.cli import OFFLINE_DEFAULTS

# The same offline settings the `granular` command uses, before any test starts a server.
for name, value in OFFLINE_DEFAULTS.items():
    os.environ.setdefault(name, value)


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
