"""Serving the fused model: back-off to a coarser level on hand-made probabilities, the registry's
champion gate and its rollback, the real `mlflow models serve` answering over HTTP exactly as
FusedClassifier does, and `granular predict` on files."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from prefect.logging import disable_run_logger

from flows.cli import main
from granular.config import Config, FusionConfig, TrainConfig
from granular.core.fusion import choose_fusion
from granular.core.taxonomy import load_taxonomy, parse_taxonomy
from granular.modalities.experts import ViewModel
from granular.modalities.images.idx import write_idx
from granular.modalities.images.reader import ImageInput, ImageReader
from granular.nn.device import select_runtime
from granular.nn.inputs import Pixels
from granular.nn.train import fit
from granular.serving.bundle import write_bundle
from granular.serving.predict import FusedClassifier, back_off
from tasks import serving, tracking
from tasks.registry import CHAMPION, PROMOTED_TAG, REASONS_TAG, register_fused_model
from tasks.tracking import RunRef
from test_promotion import GATE

TAXONOMY_FILE = Path(__file__).resolve().parents[1] / "data" / "taxonomy.yaml"
# What the registrations here are configured with: the gate stated in full (test_promotion.GATE: a
# gain of more than 0 over fine-28, significant by McNemar at p < 0.05, more than 0 over the
# champion), not params.yaml's tunable defaults; the model name is serving.model_name's.
GATED = Config(promotion=GATE)
NAME = GATED.serving.model_name  # what _register files the model under

# fine classes a, b (under group x) and c (under y); x and y under "all": three levels
THREE_LEVELS = parse_taxonomy({
    "levels": ["fine", "group", "root"],
    "classes": [{"fine": "a", "group": "x", "root": "all"},
                {"fine": "b", "group": "x", "root": "all"},
                {"fine": "c", "group": "y", "root": "all"}],
})


# --- back-off ---------------------------------------------------------------------------------

def test_without_a_threshold_every_answer_is_the_fine_label():
    proba = np.array([[0.4, 0.35, 0.25], [0.1, 0.2, 0.7]])
    answer = back_off(proba, THREE_LEVELS, None)
    assert answer["prediction"].tolist() == ["a", "c"]
    assert answer["prediction_level"].tolist() == ["fine", "fine"]
    np.testing.assert_allclose(answer["prediction_confidence"], [0.4, 0.7])


def test_an_unsure_fine_label_backs_off_to_the_first_level_sure_enough():
    proba = np.array([
        [0.90, 0.05, 0.05],  # sure of the fine class
        [0.40, 0.35, 0.25],  # unsure of a, but a or b (group x) has 0.75
        [0.40, 0.20, 0.40],  # group x 0.6, y 0.4: not sure of either group; the root always is
    ])
    answer = back_off(proba, THREE_LEVELS, 0.7)
    assert answer["prediction"].tolist() == ["a", "x", "all"]
    assert answer["prediction_level"].tolist() == ["fine", "group", "root"]
    np.testing.assert_allclose(answer["prediction_confidence"], [0.9, 0.75, 1.0])


def test_the_coarser_answer_is_the_most_probable_group_not_the_fine_labels_parent():
    proba = np.array([[0.30, 0.30, 0.40]])  # fine c is most probable, but its group y has 0.4; x has 0.6
    answer = back_off(proba, THREE_LEVELS, 0.6)
    assert answer["prediction"].tolist() == ["x"] and answer["prediction_level"].tolist() == ["group"]


def test_a_probability_exactly_at_the_threshold_is_sure_enough():
    answer = back_off(np.array([[0.5, 0.25, 0.25]]), THREE_LEVELS, 0.5)
    assert answer["prediction_level"].tolist() == ["fine"]


def test_when_no_level_is_sure_the_coarsest_answers():
    two_levels = parse_taxonomy({"levels": ["fine", "coarse"], "classes": [
        {"fine": "a", "coarse": "x"}, {"fine": "b", "coarse": "y"}, {"fine": "c", "coarse": "z"}]})
    answer = back_off(np.array([[0.4, 0.3, 0.3]]), two_levels, 0.9)
    assert answer["prediction"].tolist() == ["x"] and answer["prediction_level"].tolist() == ["coarse"]
    np.testing.assert_allclose(answer["prediction_confidence"], [0.4])


# --- a tiny fused model -------------------------------------------------------------------------

def _images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    images = rng.random((count, 28, 28)) * 100 + labels[:, None, None] * 15  # brighter with the label
    return images.astype(np.uint8), labels


def _train_view(folder: Path, level: str, images: np.ndarray, fine_labels: np.ndarray) -> np.ndarray:
    """Save the view's model into `folder`; return its probabilities on the images."""
    taxonomy = load_taxonomy(TAXONOMY_FILE)
    labels = taxonomy.map_labels(fine_labels, level)
    config = TrainConfig(epochs=1, batch_size=32, width=4, seed=0)
    runtime = select_runtime(threads=1, precision="fp32")
    x = Pixels(images)
    trained = fit(x, labels, x, labels, num_classes=taxonomy.num_classes(level), config=config, runtime=runtime)
    trained.meta = {"train_config": config.model_dump(), "class_names": list(taxonomy.names[level])}
    folder.mkdir(parents=True)
    ViewModel(level=level, reader=ImageReader(resolution=28), networks=[trained]).save(folder)
    return trained.val_proba


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A fused model of a fine and a coarse view, each a width-4 CNN trained for one epoch."""
    root = tmp_path_factory.mktemp("tiny-model")
    images, labels = _images(200, seed=0)
    levels = {"fine-28": "fine", "coarse-28": "coarse"}
    models = {view: root / "models" / view for view in levels}
    probas = {view: _train_view(models[view], level, images, labels) for view, level in levels.items()}
    taxonomy = load_taxonomy(TAXONOMY_FILE)
    _, record = choose_fusion(
        FusionConfig(strategy="product"), {view: taxonomy.parent[level] for view, level in levels.items()},
        probas, labels, folds=np.arange(len(labels)) % 2,
    )
    (root / "fused").mkdir()
    write_bundle(root / "fused", TAXONOMY_FILE, record, models, ImageInput((28, 28)))
    return root / "fused"


@pytest.fixture(scope="module")
def test_images() -> np.ndarray:
    return _images(40, seed=1)[0]


@pytest.fixture(scope="module")
def threshold(bundle, test_images) -> float:
    """The median fine confidence: about half the images back off, half do not."""
    return float(np.median(FusedClassifier.load(bundle).predict(test_images)["confidence"]))


def _metrics(fused: float, best: float = 0.80) -> dict:
    # Every fused model here beats fine-28 by 4 points or more: on 1000 test images, a gain
    # McNemar's test finds significant, so the champion alone decides.
    return {"best_single": "fine-28", "test": {"fine-28": {"accuracy": best, "level": "fine"},
                                              "fused": {"accuracy": fused, "level": "fine"}},
            "mcnemar": {"versus": "fine-28", "b": 70, "c": 30, "statistic": 15.21, "p_value": 9.6e-5, "method": "chi2"}}


def _parent_run(uri: str, root: Path, fused_accuracy: float) -> RunRef:
    """A flow's parent run, with the test metric record_evaluation would have logged."""
    client, experiment_id = tracking.open_experiment(uri, "serving-test", root / "mlartifacts")
    run_id = client.create_run(experiment_id).info.run_id
    tracking.log_metrics(client, run_id, {"test.fused.accuracy": fused_accuracy, "test.fine-28.accuracy": 0.80})
    return RunRef(uri=uri, experiment_id=experiment_id, run_id=run_id)


def _register(parent: RunRef, model_uri: str, metrics: dict, config: Config = GATED) -> dict:
    with disable_run_logger():
        return register_fused_model.fn(parent, model_uri, metrics, config)


# --- the registry's gate -----------------------------------------------------------------------

@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns.db'}"


def _logged_stand_in(parent: RunRef, tmp_path: Path) -> str:
    """A run's logged model, as log_served_model leaves it (`models:/<model_id>`); the gate never
    opens it, so one file stands in for its artifacts."""
    client = MlflowClient(parent.uri)
    logged = client.create_logged_model(parent.experiment_id, name=serving.MODEL_NAME, source_run_id=parent.run_id)
    folder = tmp_path / f"model-{parent.run_id}"
    folder.mkdir()
    (folder / "MLmodel").write_text(f"model_id: {logged.model_id}\n")
    client.log_model_artifacts(logged.model_id, str(folder))
    return f"models:/{logged.model_id}"


def _registration(store: str, tmp_path: Path, fused: float, config: Config = GATED) -> tuple[RunRef, dict]:
    parent = _parent_run(store, tmp_path, fused)
    return parent, _register(parent, _logged_stand_in(parent, tmp_path), _metrics(fused), config)


def _champion(client: MlflowClient, name: str = NAME) -> str | None:
    version = client.get_registered_model(name).aliases.get(CHAMPION)
    return None if version is None else str(version)


def _versions(client: MlflowClient) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name='{NAME}'"))


def test_a_worse_second_model_is_registered_but_the_champion_stays(store, tmp_path):
    client = MlflowClient(store)
    _, first = _registration(store, tmp_path, 0.85)
    assert first == {"name": NAME, "version": "1", "promoted": True, "reasons": first["reasons"]}
    assert _champion(client) == "1"

    parent, second = _registration(store, tmp_path, 0.84)
    assert second["version"] == "2" and second["promoted"] is False
    assert second["reasons"] == [
        "fused accuracy 0.8400 does not beat the champion (version 1) (0.8500) by more than the margin 0 (gain -0.0100)"
    ]
    assert _champion(client) == "1"
    version = client.get_model_version(NAME, "2")
    assert version.tags[PROMOTED_TAG] == "false" and version.tags[REASONS_TAG] == second["reasons"][0]
    assert version.tags["test.fused.accuracy"] == "0.8400"  # four decimals for people
    run_tags = client.get_run(parent.run_id).data.tags
    assert run_tags[PROMOTED_TAG] == "false" and run_tags["granular.registry.version"] == "2"

    _, third = _registration(store, tmp_path, 0.86)
    assert third["promoted"] is True
    assert _champion(client) == "3"


def test_the_gate_settings_come_from_the_config(store, tmp_path):
    config = Config(promotion=GATE | {"min_gain_over_best_single": 0.1}, serving={"model_name": "other"})
    _, result = _registration(store, tmp_path, 0.85, config)  # beats fine-28 (0.80) by 0.05 only
    assert result["name"] == "other" and result["promoted"] is False
    assert "by more than the margin 0.1" in result["reasons"][0]
    assert _champion(MlflowClient(store), "other") is None


def test_a_failure_after_the_version_was_created_leaves_the_registry_as_it_was(store, tmp_path, monkeypatch):
    client = MlflowClient(store)
    _registration(store, tmp_path, 0.85)
    parent = _parent_run(store, tmp_path, 0.90)
    model_uri = _logged_stand_in(parent, tmp_path)

    def tracking_server_down(*args, **kwargs):  # the last step, after the alias has moved
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(MlflowClient, "log_batch", tracking_server_down)
    with pytest.raises(ConnectionError, match="went away"):
        _register(parent, model_uri, _metrics(0.90))
    assert _versions(client) == ["1"]
    assert _champion(client) == "1"


def test_a_failed_first_registration_leaves_no_registered_model(store, tmp_path, monkeypatch):
    parent = _parent_run(store, tmp_path, 0.90)
    model_uri = _logged_stand_in(parent, tmp_path)

    def alias_refused(*args, **kwargs):
        raise RuntimeError("alias refused")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", alias_refused)
    with pytest.raises(RuntimeError, match="alias refused"):
        _register(parent, model_uri, _metrics(0.90))
    assert MlflowClient(store).search_registered_models() == []


# --- the served model over HTTP -----------------------------------------------------------------

class _Warnings(logging.Handler):
    """MLflow's warnings: its loggers do not propagate to pytest's caplog."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def logged(bundle, test_images, threshold, tmp_path_factory) -> tuple[RunRef, str, list[str]]:
    """The tiny model logged with its back-off threshold into a run of its own store: the run,
    the URI log_served_model returned, and the warnings MLflow logged meanwhile."""
    root = tmp_path_factory.mktemp("registry")
    parent = _parent_run(f"sqlite:///{root / 'mlruns.db'}", root, 0.85)
    warned = _Warnings()
    logging.getLogger("mlflow").addHandler(warned)
    try:
        model_uri = serving.log_served_model(parent, bundle, test_images[:3], backoff_threshold=threshold)
    finally:
        logging.getLogger("mlflow").removeHandler(warned)
    return parent, model_uri, warned.messages


@pytest.fixture(scope="module")
def registered(logged) -> str:
    """The logged model registered and made champion; the store's URI."""
    parent, model_uri, _ = logged
    assert _register(parent, model_uri, _metrics(0.85))["promoted"]
    return parent.uri


def test_the_served_model_is_the_runs_logged_model_logged_as_code_without_a_warning(logged):
    parent, model_uri, warned = logged
    client = MlflowClient(parent.uri)
    [model] = client.search_logged_models(experiment_ids=[parent.experiment_id])
    assert (model.name, model.source_run_id, model.status) == (serving.MODEL_NAME, parent.run_id, LoggedModelStatus.READY)
    assert model_uri == f"models:/{model.model_id}"
    # What the run's page lists under "Logged models"
    assert [output.model_id for output in client.get_run(parent.run_id).outputs.model_outputs] == [model.model_id]
    assert {a.path for a in client.list_logged_model_artifacts(model.model_id)} >= {"MLmodel", "model_code.py", "code"}
    assert warned == []  # a pickled python_model is warned about: MLflow runs model_code.py instead


def test_the_logged_model_loads_and_answers_as_the_bundle_does(logged, bundle, test_images, threshold):
    parent, model_uri, _ = logged
    with tracking.using_tracking_uri(parent.uri):  # where models:/<model_id> resolves
        answer = mlflow.pyfunc.load_model(model_uri).predict(test_images)
    expected = pd.DataFrame(FusedClassifier.load(bundle).predict(test_images, threshold))
    pd.testing.assert_frame_equal(answer, expected)
    assert set(answer["prediction_level"]) == {"fine", "coarse"}  # the threshold travelled with the model


def test_the_served_model_ships_the_domain_package_alone(registered):
    client = MlflowClient(registered)
    [version] = client.search_model_versions(f"name='{NAME}'")
    model_id = version.source.removeprefix("models:/")
    code = {a.path.rsplit("/", 1)[-1] for a in client.list_logged_model_artifacts(model_id, "code")}
    assert code == {"granular"}  # not tasks/ or flows/: the pyfunc class lives in granular.serving.model_code


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(server: subprocess.Popen, url: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the model server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    pytest.fail(f"the model server did not answer {url} within {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    """End the server's process group (the server and its uvicorn workers)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:  # already gone
            return
        try:
            server.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


def _post_json(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def served_answer(model_uri: str, tracking_uri: str, payload: dict, log: Path) -> dict:
    """What the real `mlflow models serve` of `model_uri` answers to one POST of `payload`."""
    port = _free_port()
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
            # the server runs `uvicorn` from PATH: the venv's bin, as in an activated venv
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
                 "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
            stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the server and its workers end together
        )
    try:
        _wait_until_up(server, f"http://127.0.0.1:{port}/ping", log)
        return _post_json(f"http://127.0.0.1:{port}/invocations", payload)
    finally:
        _stop(server)


@pytest.mark.slow
def test_the_champion_served_over_http_answers_as_the_bundle_does(registered, bundle, test_images, threshold, tmp_path):
    answer = served_answer(
        f"models:/{NAME}@{CHAMPION}", registered, {"inputs": test_images.tolist()}, tmp_path / "server.log"
    )
    served = pd.DataFrame(answer["predictions"])
    expected = pd.DataFrame(FusedClassifier.load(bundle).predict(test_images, threshold))
    assert list(served.columns) == list(expected.columns)
    for column in ("label", "fine", "coarse", "prediction", "prediction_level"):
        assert served[column].tolist() == expected[column].tolist(), column
    for column in ("confidence", "prediction_confidence"):
        np.testing.assert_allclose(served[column], expected[column], rtol=1e-5)
    assert set(served["prediction_level"]) == {"fine", "coarse"}  # the threshold travelled with the model


# --- granular predict ------------------------------------------------------------------------------

def _params(tmp_path: Path, text: str) -> Path:
    params = tmp_path / "params.yaml"
    params.write_text(text)
    return params


def _predict_cli(params: Path, model: str, source: Path, output: Path, *extra: str) -> int:
    return main(["predict", "--params", str(params), "--model", model, "--input", str(source),
                 "--output", str(output), *extra])


def test_predict_from_a_bundle_writes_one_row_per_image_with_its_source(bundle, test_images, tmp_path):
    params = _params(tmp_path, "serving: {backoff_threshold: 0.3}\n")
    arrays = tmp_path / "inputs"
    arrays.mkdir()
    np.save(arrays / "a.npy", test_images[:25])
    np.save(arrays / "b.npy", test_images[25:].reshape(-1, 28 * 28).astype(np.float32))  # rows of pixels
    output = tmp_path / "out" / "predictions.csv"
    assert _predict_cli(params, str(bundle), arrays, output, "--batch-size", "7") == 0

    table = pd.read_csv(output)
    expected = pd.DataFrame(FusedClassifier.load(bundle).predict(test_images, 0.3))
    assert len(table) == len(test_images)
    assert table["source"].tolist() == [str(arrays / "a.npy")] * 25 + [str(arrays / "b.npy")] * 15
    assert table["index"].tolist() == list(range(25)) + list(range(15))
    assert table["label"].tolist() == expected["label"].tolist()
    assert table["prediction"].tolist() == expected["prediction"].tolist()


def test_predict_reads_gzipped_idx_and_pictures(bundle, test_images, tmp_path):
    from PIL import Image

    params = _params(tmp_path, "{}\n")
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test_images[:5])
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for number, image in enumerate(test_images[:3]):
        Image.fromarray(image).save(pictures / f"{number}.png")
    labels = FusedClassifier.load(bundle).predict(test_images[:5])["label"].tolist()

    assert _predict_cli(params, str(bundle), tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "idx.csv") == 0
    assert pd.read_csv(tmp_path / "idx.csv")["label"].tolist() == labels
    assert _predict_cli(params, str(bundle), pictures, tmp_path / "png.csv") == 0
    assert pd.read_csv(tmp_path / "png.csv")["label"].tolist() == labels[:3]


def test_predict_brings_a_picture_of_another_size_to_the_models_and_refuses_a_tiny_one(bundle, tmp_path, capsys):
    from PIL import Image

    params = _params(tmp_path, "clean: {min_side: 10}\n")
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(pictures / "fine.png")
    Image.fromarray(np.zeros((32, 48), dtype=np.uint8)).save(pictures / "bigger.jpg")
    output = tmp_path / "predictions.csv"
    assert _predict_cli(params, str(bundle), pictures, output) == 0
    assert len(pd.read_csv(output)) == 2
    Image.fromarray(np.zeros((6, 30), dtype=np.uint8)).save(pictures / "sliver.png")
    assert _predict_cli(params, str(bundle), pictures, tmp_path / "again.csv") == 2
    assert f"{pictures / 'sliver.png'}: smaller than clean.min_side (10 pixels)" in capsys.readouterr().err
    assert not (tmp_path / "again.csv").exists()


def test_predict_refuses_pixels_outside_0_to_255(bundle, tmp_path, capsys):
    params = _params(tmp_path, "{}\n")
    np.save(tmp_path / "scaled.npy", np.full((2, 28, 28), 300.0))
    assert _predict_cli(params, str(bundle), tmp_path / "scaled.npy", tmp_path / "p.csv") == 2
    assert "scaled.npy: pixels must be finite and within 0..255, found 300.0..300.0" in capsys.readouterr().err


def test_predict_with_the_registered_champion_uses_the_threshold_logged_with_it(
    registered, bundle, test_images, threshold, tmp_path
):
    params = _params(tmp_path, f"tracking: {{uri: '{registered}'}}\n")  # serving.backoff_threshold unset here
    np.save(tmp_path / "images.npy", test_images)
    assert _predict_cli(params, f"models:/{NAME}@{CHAMPION}", tmp_path / "images.npy", tmp_path / "p.csv") == 0
    table = pd.read_csv(tmp_path / "p.csv")
    expected = FusedClassifier.load(bundle).predict(test_images, threshold)
    assert table["prediction"].tolist() == expected["prediction"].tolist()
    assert table["prediction_level"].tolist() == expected["prediction_level"].tolist()
