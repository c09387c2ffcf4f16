"""The MLflow store is created once, safely, even when several runs start at the same moment."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tasks.tracking import flatten, using_tracking_uri

OPEN_AND_LOG = """
import sys
from pathlib import Path
from tasks.tracking import log_metrics, open_experiment
uri, root = sys.argv[1], Path(sys.argv[2])
client, experiment_id = open_experiment(uri, "concurrent", root / "mlartifacts")
run = client.create_run(experiment_id)
log_metrics(client, run.info.run_id, {f"m{i}": float(i) for i in range(50)})
client.set_terminated(run.info.run_id)
"""


@pytest.mark.slow
def test_four_processes_on_a_new_sqlite_store_all_finish(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    processes = [
        subprocess.Popen([sys.executable, "-c", OPEN_AND_LOG, uri, str(tmp_path)], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=240)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, errors

    client = MlflowClient(uri)
    experiments = [e for e in client.search_experiments() if e.name == "concurrent"]
    assert len(experiments) == 1
    runs = client.search_runs([experiments[0].experiment_id])
    assert len(runs) == 4
    assert all(len(r.data.metrics) == 50 and r.info.status == "FINISHED" for r in runs)
    assert experiments[0].artifact_location == (tmp_path / "mlartifacts" / "concurrent").as_uri()


def test_flatten_joins_nested_keys_with_dots():
    assert flatten({"train": {"lr": 0.1, "aug": {"flip": True}}, "seed": 0}) == {
        "train.lr": 0.1,
        "train.aug.flip": True,
        "seed": 0,
    }


def test_a_metric_named_after_a_tables_segment_value_is_logged_whatever_the_value(tmp_path: Path):
    from tasks.tracking import log_metrics, metric_key

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    run = client.create_run(client.create_experiment("segments"))
    keys = {"segments.fine-all-contract.Credit card (automatic).accuracy": 0.5,
            "segments.fine-all-region.N/A.accuracy": 0.25, "segment-Area Code: 415.val_accuracy": 0.75}
    log_metrics(client, run.info.run_id, keys)  # MLflow refused the first two as they are
    logged = client.get_run(run.info.run_id).data.metrics
    assert logged == {metric_key(key): value for key, value in keys.items()}
    assert "segments.fine-all-contract.Credit card _automatic_.accuracy" in logged


def test_the_experiment_opens_as_model_training_and_a_kind_a_user_chose_stays(tmp_path: Path):
    from tasks.tracking import open_experiment

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client, experiment = open_experiment(uri, "granular", tmp_path / "artifacts")
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    older = client.create_experiment("made-before")  # by a version that set no kind: given one
    open_experiment(uri, "made-before", tmp_path / "artifacts")
    assert client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"
    client.set_experiment_tag(experiment, "mlflow.experimentKind", "genai_development")
    open_experiment(uri, "granular", tmp_path / "artifacts")
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "genai_development"


@pytest.mark.parametrize("environment", [None, "sqlite:///from-the-environment.db"])
def test_the_tracking_uri_is_the_runs_for_the_block_and_as_it_was_after(environment, monkeypatch):
    if environment is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", environment)
    before = mlflow.get_tracking_uri()
    with pytest.raises(RuntimeError, match="in the block"):
        with using_tracking_uri("sqlite:///the-run.db"):
            assert mlflow.get_tracking_uri() == "sqlite:///the-run.db"
            raise RuntimeError("in the block")
    assert mlflow.get_tracking_uri() == before
    assert os.environ.get("MLFLOW_TRACKING_URI") == environment  # MLflow would have unset it


def test_a_global_uri_set_before_comes_back_without_leaking_into_the_environment(monkeypatch):
    from mlflow.tracking._tracking_service import utils

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(utils, "_tracking_uri", "sqlite:///set-before.db")  # as granular predict leaves it
    with using_tracking_uri("sqlite:///the-run.db"):
        pass
    assert mlflow.get_tracking_uri() == "sqlite:///set-before.db"
    assert "MLFLOW_TRACKING_URI" not in os.environ  # mlflow.set_tracking_uri would have set it

