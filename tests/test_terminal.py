"""What a command keeps off the terminal."""
from __future__ import annotations

import logging
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
import logging
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


# A run's third-party notices, each raised as its library raises it (or logs it, through the
# logger it logs it with), after the CLI's logging setup: Prefect's, then the log file's.
RUN_NOTICES = """
import logging, sys, warnings
sys.path.insert(0, {repo!r})
from flows.logfile import log_to_file
from flows.terminal import hide_tracebacks, quiet_third_parties
quiet_third_parties()
hide_tracebacks()
print(log_to_file({root!r}, "run"))

import mlflow, mlflow.pyfunc
import pandas as pd
from mlflow.utils.warnings_utils import color_warning

class Model(mlflow.pyfunc.PythonModel):  # MLflow's type-hint advice, as the class is defined
    def predict(self, context, model_input, params=None):
        return model_input

mlflow.set_tracking_uri("sqlite:///" + {root!r} + "/mlruns.db")  # a new store's tables
with mlflow.start_run() as run:
    mlflow.log_text("x", "a.txt")
mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path={root!r} + "/downloaded")  # a bar
pyfunc = logging.getLogger("mlflow.pyfunc")
pyfunc.warning("Passing a Python object as `python_model` causes it to be serialized using CloudPickle, ...")
pyfunc.info("Validating input example against model signature")
logging.getLogger("great_expectations").setLevel(logging.INFO)  # as Great Expectations sets it
logging.getLogger("great_expectations.data_context.types.base").info(
    "Created temporary directory '/tmp/tmpx' for ephemeral docs site")
frame = pd.DataFrame(index=range(3))
for k in range(120):  # pandas' PerformanceWarning
    frame.insert(k, f"c{{k}}", k)
logging.captureWarnings(True)  # as Great Expectations logs warnings while it validates
warnings.warn("Add type hints to the `predict` method, as logged")
logging.captureWarnings(False)
color_warning("An input example was not provided when logging the model.", stacklevel=1, color="yellow")
logging.getLogger("granular.nn.hooks").info("early stop after epoch 3: no better validation loss since epoch 1")
"""

FILTERED = {  # what each notice says, as the log file keeps it
    "type hints": "Add type hints to the `predict` method",
    "type hints, logged": "Add type hints to the `predict` method, as logged",
    "CloudPickle": "serialized using CloudPickle",
    "new store": "Creating initial MLflow database tables",
    "signature check": "Validating input example against model signature",
    "Great Expectations docs": "for ephemeral docs site",
    "pandas": "DataFrame is highly fragmented",
}


@pytest.fixture(scope="module")
def run_notices(tmp_path_factory) -> tuple[str, str]:
    """(the terminal's stderr, the log file) of a script that raises every notice."""
    root = tmp_path_factory.mktemp("project")
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"}
    done = subprocess.run(
        [sys.executable, "-c", RUN_NOTICES.format(repo=str(REPO), root=str(root))],
        capture_output=True, text=True, env=env, check=True, timeout=300,
    )
    log = Path(done.stdout.strip().splitlines()[0])
    assert log.parent == root / ".granular" / "logs" and log.name.endswith("-run.log")
    return done.stderr, log.read_text()


@pytest.mark.parametrize("notice", sorted(FILTERED))
def test_a_notice_that_says_nothing_stays_off_the_terminal_and_in_the_log_file(run_notices, notice):
    terminal, log = run_notices
    assert FILTERED[notice] not in terminal
    assert FILTERED[notice] in log


def test_mlflow_s_download_bars_stay_off_the_terminal(run_notices):
    assert "Downloading artifacts" not in run_notices[0]


def test_a_warning_kept_on_the_terminal_has_no_colour_codes(run_notices):
    terminal, _ = run_notices
    assert "An input example was not provided when logging the model." in terminal
    assert "\x1b[" not in terminal


def test_granular_s_news_is_info_on_the_terminal_and_in_the_log_file(run_notices):
    terminal, log = run_notices
    line = "early stop after epoch 3: no better validation loss since epoch 1"
    assert any(line in shown and "INFO" in shown for shown in terminal.splitlines())
    assert any(line in kept and "INFO" in kept for kept in log.splitlines())


def test_early_stopping_says_so_at_info_naming_the_training(caplog, tmp_path):
    from types import SimpleNamespace

    from granular.nn.hooks import EarlyStopping

    caplog.set_level(logging.DEBUG, logger="granular")
    run = SimpleNamespace(epoch=5, best={"epoch": 3}, stopped=False)
    EarlyStopping(2, tmp_path / "network-0").on_epoch_end(run, {})
    assert run.stopped
    [record] = [r for r in caplog.records if r.name == "granular.nn.hooks"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        f"early stop after epoch 5: no better validation loss since epoch 3 ({tmp_path / 'network-0'})"
    )
