"""What a command keeps off the terminal."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A served model's class, as MLflow sees granular's (granular/serving/model_code.py): a predict
# without type hints, which MLflow warns about as the class is defined.
DEFINE_A_MODEL = """
import logging
import sys
sys.path.insert(0, {repo!r})
{quiet}
if {logged}:  # as a flow run shows warnings: logged by Prefect's handlers
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addHandler(logging.StreamHandler())
import mlflow.pyfunc

class Model(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input
import os
print(os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"))
"""


def _define(quiet: str, logged: bool) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"}
    code = DEFINE_A_MODEL.format(repo=str(REPO), quiet=quiet, logged=logged)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)


@pytest.mark.parametrize("logged", [False, True])
def test_mlflow_s_type_hint_advice_and_download_bars_stay_off_the_terminal(logged):
    loud = _define("", logged)
    assert "Add type hints to the `predict` method" in loud.stderr  # what a command would print
    quiet = _define("from flows.terminal import quiet_third_parties; quiet_third_parties()", logged)
    assert "type hints" not in quiet.stderr
    assert quiet.stdout.strip() == "false"  # MLflow's artifact download bars off
