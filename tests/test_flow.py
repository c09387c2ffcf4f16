"""End to end: the Prefect flow on a subsample of the real Fashion-MNIST, tracked in MLflow."""
from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from prefect.artifacts import Artifact
from prefect.settings import PREFECT_API_URL, temporary_settings
from small_project import SMALL_RUN, VIEWS, SmallRun, default_project

from flows.cli import main as granular_cli
from flows.pipeline import granular_pipeline
from granular.config import Config, load_config
from granular.core.validation import ValidationFailed
from granular.pipeline import train as step
from tasks.training import ViewsFailed

pytestmark = [pytest.mark.usefixtures("prefect_test_server"), pytest.mark.slow]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with the repository's params.yaml and taxonomy, and its own stores."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return default_project(tmp_path)


def _config(project: Path) -> Config:
    """What a run of the project reads: the experiment and the model name it records under."""
    return load_config(project / "params.yaml")


def _runs(project: Path, tracking_uri: str | None = None):
    """The project's MLflow runs, from its own store unless a server is named."""
    client = MlflowClient(tracking_uri or f"sqlite:///{project / 'mlruns.db'}")
    experiment = client.get_experiment_by_name(_config(project).tracking.experiment)
    return client, client.search_runs([experiment.experiment_id])


def test_cli_runs_the_whole_pipeline_and_tracks_it(small_run: SmallRun, tmp_path: Path):
    project = small_run.root
    metrics = json.loads((project / "data/evaluation/metrics.json").read_text())
    assert set(metrics["test"]) == set(VIEWS) | {"fused", "student", "cascade", "fine-28-no-tta"}
    for scores in metrics["test"].values():
        assert 0.0 <= scores["macro_f1"] <= 1.0
        assert scores["n"] == 600  # the test subsample, never trained on
    assert metrics["best_single"] in ("fine-28", "fine-14", "fine-14-clusters4")
    by_segment = metrics["segments"]["fine-14-clusters4"]  # each expert next to the global fine-14
    assert sum(s["n"] for s in by_segment.values()) == 600
    assert all(0 <= s["accuracy"] <= 1 and 0 <= s["global_accuracy"] <= 1 for s in by_segment.values())
    # Even two tiny epochs learn something: far above the 10% of chance.
    assert metrics["test"]["fused"]["accuracy"] > 0.4
    assert "coarse_accuracy" in metrics["test"]["fused"]  # implied by the fine prediction
    assert "coarse_accuracy" not in metrics["test"]["coarse-28"]

    table = small_run.stdout
    for name in VIEWS + ["fused"]:
        assert name in table
    assert "fused - best single view" in table and "McNemar, fused vs " in table
    model_name = _config(project).serving.model_name
    assert f"registered {model_name} version 1; champion: " in table
    assert "fine-14-clusters4: test accuracy of each segment's expert vs the global model" in table
    assert f"quarantined: 0 of 1200 examples -> {project / 'data/quarantine/rejected.csv'}" in table

    client, runs = _runs(project, small_run.tracking_uri)  # through the server, which holds the artifacts
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {r.data.tags["mlflow.runName"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert parent.info.status == "FINISHED"
    assert set(children) == set(VIEWS)
    assert parent.data.metrics["test.fused.accuracy"] == pytest.approx(metrics["test"]["fused"]["accuracy"])
    assert parent.data.params["train.epochs"] == "2"
    assert parent.data.tags["prefect.flow_run_id"]
    assert parent.data.tags["granular.split.fine-28.test.md5"]
    # fine-28 learns at 14x14 for an epoch first (SMALL_RUN), under that stage's name, then at 28x28.
    history = client.get_metric_history(children["fine-28"].info.run_id, "stage-0-fine-14.val_accuracy")
    assert [m.step for m in history] == [1]
    history = client.get_metric_history(children["fine-28"].info.run_id, "val_accuracy")
    assert [m.step for m in history] == [2, 3]
    for segment in range(4):  # every expert's curve, in the segmented view's run
        history = client.get_metric_history(children["fine-14-clusters4"].info.run_id, f"segment-{segment}.val_accuracy")
        assert [m.step for m in history] == [1, 2]
    assert parent.data.metrics["segments.fine-14-clusters4.segment-0.global_accuracy"] >= 0
    assert any(key.startswith("system/cpu_utilization") for key in children["fine-28"].data.metrics)
    artifacts = {a.path for a in client.list_artifacts(children["fine-14-clusters4"].info.run_id, "model")}
    assert {"model/learning_curves.png", "model/view.json", "model/segmenter.npz", "model/network-3.pt"} <= artifacts
    with temporary_settings({PREFECT_API_URL: small_run.prefect_api}):  # the run's Prefect server
        progress = Artifact.get(key="train-fine-14-clusters4")  # watched in the Prefect UI
        report = Artifact.get(key="granular-report")  # the run's report in the Prefect UI
    assert progress.type == "progress" and progress.data == pytest.approx(100.0)
    assert report.type == "markdown" and "| fused |" in report.data and parent.info.run_id in report.data
    assert report.description.startswith("test accuracy: fused ") and " champion: " in report.description  # the card says it
    # The served model is the cascade, one pyfunc that rebuilds its stages, every view and the
    # fusion from its own files: the run's Logged Model.
    [output] = client.get_run(parent.info.run_id).outputs.model_outputs
    served = mlflow.pyfunc.load_model(mlflow.artifacts.download_artifacts(
        client.get_logged_model(output.model_id).artifact_location, dst_path=str(tmp_path),
        tracking_uri=small_run.tracking_uri,
    ))
    cascade = np.load(project / "data/cascade/predictions.npz")
    stages = [stage["name"] for stage in json.loads((project / "data/cascade/cascade.json").read_text())["stages"]]
    rows = np.load(project / "data/processed/fine-28/test.npz")["rows"][:5]
    images = np.load(project / "data/interim/clean.npz")["images"][rows]
    predicted = served.predict(images)  # routed to segment experts too, from full-size images
    assert predicted["label"].tolist() == cascade["test_proba"][:5].argmax(axis=1).tolist()
    assert predicted["stage"].tolist() == [stages[k] for k in cascade["test_stage"][:5]]
    classes = yaml.safe_load((project / "data/taxonomy.yaml").read_text())
    every_class = {f"proba_{entry['fine']}" for entry in classes["classes"]}
    assert set(predicted.columns) == {
        "label", "confidence", "fine", "coarse", "prediction", "prediction_level", "prediction_confidence", "stage",
        *every_class,
    }
    assert predicted["confidence"].between(0, 1).all()
    np.testing.assert_allclose(predicted[sorted(every_class)].sum(axis=1), 1.0, rtol=1e-5)
    assert (project / "data/evaluation/confusion/fused.png").stat().st_size > 0
    predictions = pd.read_csv(project / "data/evaluation/test_predictions.csv")
    assert list(predictions.columns) == ["actual", "actual_coarse"] + VIEWS + ["fused", "student", "cascade", "fine-28-no-tta"]
    assert len(predictions) == 600
    assert (predictions["fused"] == predictions["actual"]).mean() == pytest.approx(metrics["test"]["fused"]["accuracy"])
    evaluation = {a.path for a in client.list_artifacts(parent.info.run_id, "evaluation")}
    assert {"evaluation/reliability", "evaluation/per_class.json", "evaluation/latency.json"} <= evaluation
    assert parent.data.metrics["mcnemar_p_value"] == pytest.approx(metrics["mcnemar"]["p_value"])
    assert parent.data.metrics["significance_p_value"] == pytest.approx(metrics["significance"]["p_value"])
    assert parent.data.metrics["distill.float.accuracy"] == pytest.approx(metrics["test"]["student"]["accuracy"])

    # The fused model went to the registry; champion exactly when the gate let it through.
    version = client.get_model_version(model_name, "1")
    assert version.run_id == parent.info.run_id
    promoted = parent.data.tags["granular.promotion.promoted"] == "true"
    assert ("champion" in version.aliases) == promoted


def test_failed_validation_stops_before_training(project: Path):
    overrides = SMALL_RUN + ["validate.min_per_class=100000"]
    with pytest.raises(ValidationFailed, match=r"on data/interim/clean.npz \(cleaned from data/raw, idx files .*\n"
                       r"  - class_counts, column 'count': expect_column_values_to_be_between: min_value=100000"):
        granular_pipeline(root=str(project), overrides=overrides)
    assert not (project / "data/models").exists()
    report = json.loads((project / "data/interim/validation.json").read_text())
    assert report["success"] is False
    _, runs = _runs(project)
    assert [r.info.status for r in runs] == ["FAILED"]


TWO_VIEWS = SMALL_RUN + ["views={fine-14: {level: fine, resolution: 14}, coarse-28: {level: coarse, resolution: 28}}"]


def _fail_training_of(view: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[float, float]]:
    """Make one view's training fail; return when each view's training started and ended."""
    real_train_step = step.train_step
    spans = {}

    def train_step(config, paths, view_name, **kwargs):
        started = time.monotonic()
        try:
            if view_name == view:
                time.sleep(0.5)
                raise RuntimeError("out of memory (simulated)")
            return real_train_step(config, paths, view_name, **kwargs)
        finally:
            spans[view_name] = (started, time.monotonic())

    monkeypatch.setattr(step, "train_step", train_step)
    return spans


def test_a_failed_view_fails_the_run_after_the_other_views_trained(project: Path, monkeypatch: pytest.MonkeyPatch):
    _fail_training_of("fine-14", monkeypatch)
    with pytest.raises(ViewsFailed, match=r"fine-14: RuntimeError: out of memory \(simulated\).*allow_missing_views"):
        granular_pipeline(root=str(project), overrides=TWO_VIEWS)
    assert (project / "data/models/coarse-28/network-0.pt").exists()  # trained all the same
    _, runs = _runs(project)
    assert {r.data.tags["mlflow.runName"]: r.info.status for r in runs if "granular.view" in r.data.tags} == {
        "fine-14": "FAILED", "coarse-28": "FINISHED"
    }


def test_views_train_concurrently_and_the_run_can_go_on_without_a_failed_one(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    import tasks.evaluation
    import tasks.training

    monkeypatch.setattr(tasks.training, "concurrent_trainings", lambda threads: 2)  # both views at once
    spans = _fail_training_of("fine-14", monkeypatch)

    def no_artifact_store(**kwargs):
        raise RuntimeError("artifact store unavailable (simulated)")

    monkeypatch.setattr(tasks.evaluation, "create_markdown_artifact", no_artifact_store)
    result = granular_pipeline(root=str(project), overrides=TWO_VIEWS + ["fusion.allow_missing_views=true"])
    assert max(start for start, _ in spans.values()) < min(end for _, end in spans.values())  # overlapped
    assert result["failed_views"] == {"fine-14": "RuntimeError: out of memory (simulated)"}
    assert set(result["metrics"]["test"]) == {"coarse-28", "fused", "student"}
    client, runs = _runs(project)
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["granular.failed_view.fine-14"] == "RuntimeError: out of memory (simulated)"
    assert result["registry"]["version"] == "1"  # the report that failed after it was only a warning

    # Overrides make outputs that params.yaml does not describe: not recorded in DVC, so a
    # reproduce of this run is refused with the reason.
    assert granular_cli(["reproduce", result["mlflow_run_id"], "--root", str(project)]) == 1
    assert "did not record its data in DVC" in capsys.readouterr().err


def test_a_bad_override_is_refused_with_the_key_named(project: Path, capsys: pytest.CaptureFixture):
    assert granular_cli(["run", "--root", str(project), "--set", "train.epochs=zero"]) == 2
    assert "train.epochs" in capsys.readouterr().err


def test_tune_searches_a_view_with_one_mlflow_run_per_trial(project: Path, capsys: pytest.CaptureFixture):
    overrides = SMALL_RUN + ["tune.trials=3", "tune.epochs=1", "tune.sampler=random", "tune.pruning=false"]
    assert granular_cli(["tune", "fine-14", "--root", str(project)] + [a for o in overrides for a in ("--set", o)]) == 0
    out = capsys.readouterr().out
    assert "fine-14: best lowest validation log-loss within 1 epochs" in out and "3 trials completed" in out

    client, runs = _runs(project)
    parent = next(r for r in runs if r.data.tags.get("granular.tune") == "fine-14")
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["granular.trial"] for r in trials) == ["0", "1", "2"]
    assert all(r.info.status == "FINISHED" and "objective" in r.data.metrics for r in trials)
    assert parent.data.metrics["best_objective"] == min(r.data.metrics["objective"] for r in trials)
    proposal = yaml.safe_load((project / "data/tuning/fine-14.yaml").read_text())
    assert set(proposal["views"]["fine-14"]["train"]) == {"lr", "weight_decay", "label_smoothing", "width"}


def test_tune_refuses_an_unknown_view(project: Path, capsys: pytest.CaptureFixture):
    assert granular_cli(["tune", "fine-99", "--root", str(project)]) == 2
    assert "no view named 'fine-99'" in capsys.readouterr().err
