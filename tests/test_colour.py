"""Colour images end to end: read in colour, seen in colour or as luminance alone (a view's
`color: grey`), trained with a channel each, served in colour."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from granular.config import Config, ConfigError, load_config
from granular.core.partition import pool
from granular.demo import colours
from granular.modalities.images.color import as_seen
from granular.modalities.images.fit import ImageFit, decode, fit_to
from granular.modalities.images.modality import IMAGES
from granular.modalities.images.predict_files import InputFileError, read_image_file
from granular.modalities.images.reader import ImageInput
from granular.modalities.images.sources import SourceError, load_raw
from granular.pipeline.fuse import fuse_step
from granular.serving.served import load_served
from granular.store.atomic import read_npz
from granular.store.paths import ProjectPaths
from tests.test_evaluate import _train_every_view

SIZE = 16


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Config, ProjectPaths]:
    """The generated colour set, seen by a colour view and by a luminance view, fused."""
    root = tmp_path_factory.mktemp("colour")
    colours.generate(root / "pictures", per_class=200, size=SIZE, seed=0)
    (root / "taxonomy.yaml").write_text((root / "pictures" / "taxonomy.yaml").read_text())
    config = Config.model_validate({
        "data": {"source": {"format": "folder", "path": "pictures", "color": "rgb"}},
        "validate": {"image_shape": [SIZE, SIZE], "min_per_class": 1},
        "taxonomy": "taxonomy.yaml",
        "split": {"val_fraction": 0.2, "folds": 2},
        "views": {
            f"fine-{SIZE}": {"level": "fine", "resolution": SIZE},
            f"fine-{SIZE}-grey": {"level": "fine", "resolution": SIZE, "color": "grey"},
        },
        "train": {"epochs": 8, "width": 8, "batch_size": 32, "threads": 1},
        "distill": {"enabled": False},
        "cascade": {"stages": []},
    })
    paths = ProjectPaths(root)
    _train_every_view(config, paths)
    fuse_step(config, paths)
    return config, paths


def _test_accuracy(paths: ProjectPaths, view: str, level_of=lambda label: label) -> float:
    proba = read_npz(paths.model_dir(view) / "predictions.npz")["test_proba"]
    truth = read_npz(paths.view_split(view, "test"))["y"]
    return float(np.mean(level_of(proba.argmax(1)) == level_of(truth)))


def test_colour_tells_apart_classes_that_luminance_cannot(project):
    config, paths = project
    assert read_npz(paths.clean)["images"].shape[1:] == (SIZE, SIZE, 3)
    for view, pixels in ((f"fine-{SIZE}", (SIZE, SIZE, 3)), (f"fine-{SIZE}-grey", (SIZE, SIZE))):
        data = IMAGES.training_data(config, paths, config.view(view), None, warn=print)
        assert data.x["test"].images.shape[1:] == pixels
    assert _test_accuracy(paths, f"fine-{SIZE}") >= 0.95
    # The luminance view finds the bar's direction (the coarse class) but guesses among its
    # three colours: near a third of the fine classes.
    direction = lambda label: label // len(colours.COLOURS)  # noqa: E731
    assert _test_accuracy(paths, f"fine-{SIZE}-grey", direction) >= 0.9
    assert _test_accuracy(paths, f"fine-{SIZE}-grey") <= 0.5


def test_the_fused_model_takes_colour_images_and_says_so(project):
    _, paths = project
    served = load_served(paths.fused_dir)
    assert served.inputs == ImageInput(image_shape=(SIZE, SIZE), channels=3)
    images = read_npz(paths.clean)["images"][:4]
    np.testing.assert_array_equal(served.inputs.parse(images.reshape(4, -1)), images)  # a row of H*W*3 pixels each
    with pytest.raises(ValueError, match=r"3-channel images of 16x16 pixels, \(N, 16, 16, 3\)"):
        served.inputs.parse(images[..., 0])
    assert pd.DataFrame(served.predict(images))["label"].between(0, 5).all()


def test_granular_predict_answers_colour_pictures_as_the_model_does(project, tmp_path):
    from flows.cli import main

    _, paths = project
    images = read_npz(paths.clean)["images"][:3]
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for number, image in enumerate(images):
        Image.fromarray(image).save(pictures / f"{number}.png")
    (tmp_path / "params.yaml").write_text("{}\n")
    assert main(["predict", "--params", str(tmp_path / "params.yaml"), "--model", str(paths.fused_dir),
                 "--input", str(pictures), "--output", str(tmp_path / "predictions.csv")]) == 0
    expected = pd.DataFrame(load_served(paths.fused_dir).predict(images))
    assert pd.read_csv(tmp_path / "predictions.csv")["label"].tolist() == expected["label"].tolist()


def test_a_student_distils_the_colour_ensemble_in_colour(project):
    from granular.pipeline.distill import distill_step

    config, paths = project
    with_student = Config.model_validate(
        {**config.model_dump(by_alias=True, exclude_unset=True), "distill": {"enabled": True, "epochs": 4, "width": 8}}
    )
    report = distill_step(with_student, paths, warn=lambda message: None)
    student = load_served(paths.student_dir)
    assert student.inputs == ImageInput(image_shape=(SIZE, SIZE), channels=3)
    # Colour carried through: a student of the luminance alone would get a third of the classes.
    assert report["variants"][report["served"]]["accuracy"] >= 0.6


@pytest.mark.slow
def test_colour_images_served_over_http_answer_as_the_model_does(project, tmp_path):
    from mlflow.tracking import MlflowClient

    from tasks.registry import CHAMPION, register_version
    from tasks import serving, tracking
    from tasks.tracking import RunRef
    from tests.test_serving import served_answer

    config, paths = project
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client, experiment_id = tracking.open_experiment(uri, "colour-test", tmp_path / "mlartifacts")
    parent = RunRef(uri=uri, experiment_id=experiment_id, run_id=client.create_run(experiment_id).info.run_id)
    images = read_npz(paths.clean)["images"][:6]
    model_uri = serving.log_served_model(parent, paths.fused_dir, images[:2])
    evaluated = {"best_single": None, "test": {"fused": {"accuracy": 0.9, "level": "fine"}}}
    assert register_version(MlflowClient(uri), "colour", model_uri, parent.run_id, evaluated, config.promotion)["promoted"]

    answer = served_answer(f"models:/colour@{CHAMPION}", uri, {"inputs": images.tolist()}, tmp_path / "server.log")
    expected = pd.DataFrame(load_served(paths.fused_dir).predict(images))
    assert pd.DataFrame(answer["predictions"])["label"].tolist() == expected["label"].tolist()


# --- reading colour ------------------------------------------------------------------------------

def test_a_picture_is_read_in_the_colour_asked_for(tmp_path):
    file = tmp_path / "red.png"
    Image.fromarray(np.full((20, 30, 3), (200, 10, 10), dtype=np.uint8)).save(file)
    colour = decode(file, ImageFit((10, 10), "stretch", color="rgb")).image
    grey = decode(file, ImageFit((10, 10), "stretch")).image
    assert colour.shape == (10, 10, 3) and (colour[..., 0] == 200).all() and (colour[..., 1] == 10).all()
    assert grey.shape == (10, 10) and abs(int(grey[0, 0]) - round(0.299 * 200 + 0.587 * 10 + 0.114 * 10)) <= 1
    padded = decode(file, ImageFit((10, 10), "pad", color="rgb")).image
    assert padded.shape == (10, 10, 3) and (padded[0] == 0).all()  # black margins, in colour too


def test_granular_predict_reads_pictures_in_the_model_s_colour(tmp_path):
    file = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(file)
    assert read_image_file(file, fit_to(ImageFit((28, 28)), (16, 16, 3))).images.shape == (1, 16, 16, 3)
    assert read_image_file(file, fit_to(ImageFit((28, 28), color="rgb"), (16, 16))).images.shape == (1, 16, 16)
    array = tmp_path / "grey.npy"
    np.save(array, np.zeros((2, 16, 16), dtype=np.uint8))
    with pytest.raises(InputFileError, match=r"grey.npy: .* 16x16 pixels in colour, as \(N, 16, 16, 3\)"):
        read_image_file(array, fit_to(ImageFit((28, 28)), (16, 16, 3)))


def test_an_npz_in_colour_holds_three_channels(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    grey = np.zeros((5, 8, 8), dtype=np.uint8)
    np.savez(raw / "set.npz", x_train=grey, y_train=np.zeros(5), x_test=grey, y_test=np.zeros(5))
    with pytest.raises(SourceError, match=r"x_train must be \(N, H, W, 3\) \(data.source.color rgb\)"):
        load_raw("npz", raw, ["a"], ImageFit((8, 8), color="rgb"))
    coloured = np.zeros((5, 8, 8, 3), dtype=np.uint8)
    np.savez(raw / "set.npz", x_train=coloured, y_train=np.zeros(5), x_test=coloured, y_test=np.zeros(5))
    assert load_raw("npz", raw, ["a"], ImageFit((8, 8), color="rgb")).images.shape == (10, 8, 8, 3)


# --- a view's colour -----------------------------------------------------------------------------

def test_luminance_weighs_the_channels_as_pillow_does_and_pooling_keeps_them():
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    grey = as_seen(images, "grey")
    pillow = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in images])
    assert grey.shape == (3, 8, 8) and np.abs(grey - pillow).max() <= 1
    assert as_seen(images, None) is images
    pooled = pool(images, 4)
    assert pooled.shape == (3, 4, 4, 3)
    assert pooled[1, 2, 3, 2] == pytest.approx(images[1, 4:6, 6:8, 2].mean())


def test_a_network_reads_each_channel_scaled_by_its_own_statistics():
    torch = pytest.importorskip("torch")
    from granular.config import TrainConfig
    from granular.nn.inputs import Pixels

    images = np.zeros((4, 8, 8, 3), dtype=np.float32)
    images[..., 0], images[..., 1] = 100.0, np.arange(8)  # the blue channel constant at zero
    inputs = Pixels(images)
    mean, std = inputs.statistics(torch.device("cpu"))
    (tensor,) = inputs.to_device(torch.device("cpu"))
    assert tensor.shape == (4, 3, 8, 8)
    (scaled,) = inputs.scaled((tensor,), mean, std)
    assert torch.allclose(scaled.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-6)
    assert scaled[:, 1].std(unbiased=False).item() == pytest.approx(1.0, rel=1e-5)
    network = inputs.network(num_classes=2, config=TrainConfig(width=4))
    assert network.config.in_channels == 3 and network(scaled).shape == (4, 2)


def test_colour_settings_are_checked_against_the_source(tmp_path):
    (tmp_path / "params.yaml").write_text("data: {source: {format: idx, color: rgb}}\n")
    with pytest.raises(ConfigError, match="source.color rgb is for folder and npz images; idx holds grey ones"):
        load_config(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text(
        "data: {source: {format: npz, path: x.npz}}\nviews: {fine-28-grey: {level: fine, resolution: 28, color: grey}}\n"
    )
    with pytest.raises(ConfigError, match="view fine-28-grey: color grey is for colour images"):
        load_config(tmp_path / "params.yaml")


def test_colour_images_are_validated_channel_by_channel():
    from granular.config import ValidateConfig
    from granular.modalities.images.sources import RawDataset
    from granular.modalities.images.validate import validate

    labels = np.tile([0, 1], 4)
    data = RawDataset(
        images=np.full((8, 4, 4, 3), 9, dtype=np.int64), labels=labels, origin=np.repeat([0, 1], 4).astype(np.int8),
        index=np.tile(np.arange(4), 2),
    )
    config = ValidateConfig(image_shape=(4, 4), min_per_class=1)
    validate(data, config, num_classes=2, channels=3).raise_if_failed()
    data.images[3, 0, 0, 1] = 300  # train/3, green
    failed = validate(data, config, num_classes=2, channels=3).report["failed"]
    assert [(f["table"], f["column"]) for f in failed] == [("examples", "pixel_max_green")]
    # Read as grey where colour came: the channel count fails, and the per-channel columns.
    expected_grey = validate(data, config, num_classes=2, channels=1).report["failed"]
    assert {"channels", "pixel_min", "pixel_max"} <= {f["column"] for f in expected_grey}


def test_colour_images_are_augmented_as_their_grey_copies_are():
    torch = pytest.importorskip("torch")
    from granular.config import TrainConfig
    from granular.nn.inputs import Pixels

    grey = np.random.default_rng(0).uniform(0, 255, (16, 28, 28)).astype(np.float32)
    config = TrainConfig(random_erasing=0.5)
    (grey_batch,) = Pixels(grey).augment(Pixels(grey).to_device(torch.device("cpu")), config, torch.Generator().manual_seed(3))
    colour = np.repeat(grey[..., None], 3, axis=3)
    (colour_batch,) = Pixels(colour).augment(Pixels(colour).to_device(torch.device("cpu")), config, torch.Generator().manual_seed(3))
    for channel in range(3):  # the same shifts (up to 2 pixels at 28x28), flips and erasing
        torch.testing.assert_close(colour_batch[:, channel], grey_batch[:, 0])
