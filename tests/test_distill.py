"""Distillation: soft targets in training, the teacher's tempered probabilities mixed with the
labels, and the distill step's servable student bundle and report."""
import json
from pathlib import Path

import numpy as np
import pytest
from test_train import _data

from granular.config import Config, DistillConfig, TrainConfig
from granular.core.fusion import pass_through_record
from granular.modalities.experts import ViewModel
from granular.modalities.images.reader import ImageInput, ImageReader
from granular.nn.device import select_runtime
from granular.nn.distill import distill, mixed_targets, report_metrics, soften, student_config, teacher_targets
from granular.nn.inputs import Pixels
from granular.nn.predict import predict_proba
from granular.nn.train import fit
from granular.pipeline.distill import distill_step
from granular.serving.bundle import write_bundle
from granular.serving.predict import FusedClassifier
from granular.store.atomic import write_npz
from granular.store.paths import ProjectPaths

REPO = Path(__file__).resolve().parents[1]
RUNTIME = select_runtime(threads=1, precision="fp32")  # the same numbers on every CPU
CONFIG = TrainConfig(epochs=2, batch_size=16, width=4, seed=3)


def test_a_temperature_softens_or_sharpens_and_one_leaves_probabilities_alone():
    proba = np.array([[0.8, 0.2], [0.5, 0.5]])
    np.testing.assert_allclose(soften(proba, 2.0), [[2 / 3, 1 / 3], [0.5, 0.5]], rtol=1e-6)  # sqrt(4):sqrt(1)
    np.testing.assert_allclose(soften(proba, 0.5), [[16 / 17, 1 / 17], [0.5, 0.5]], rtol=1e-6)  # 4^2:1^2
    np.testing.assert_allclose(soften(proba, 1.0), proba, rtol=1e-6)
    with pytest.raises(ValueError, match="temperature must be positive"):
        soften(proba, 0.0)


def test_targets_mix_the_teacher_and_the_one_hot_label():
    teacher = np.array([[0.6, 0.4, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(mixed_targets(teacher, np.array([1]), alpha=0.25), [[0.15, 0.85, 0.0]], rtol=1e-6)
    with pytest.raises(ValueError, match="2 teacher predictions but 1 labels"):
        mixed_targets(np.vstack([teacher, teacher]), np.array([1]), alpha=0.5)


def test_teacher_targets_are_computed_batch_by_batch_and_tempered():
    class Teacher:
        calls = []

        def predict_proba(self, images, shifted):
            assert not shifted  # the teacher's pass over the training images skips the shifted copies
            self.calls.append(len(images))
            return np.tile([0.8, 0.2], (len(images), 1))

    teacher = Teacher()
    targets = teacher_targets(teacher, np.zeros((5, 4, 4)), batch_size=2, temperature=2.0)
    assert teacher.calls == [2, 2, 1]
    np.testing.assert_allclose(targets, np.tile([2 / 3, 1 / 3], (5, 1)), rtol=1e-6)


def test_a_student_learns_the_teachers_answers_not_the_labels():
    x, image_class = _data(240)
    noise = np.random.default_rng(1).integers(0, 3, len(x))  # labels the images do not show
    teacher = np.full((len(x), 3), 0.05, dtype=np.float32)
    teacher[np.arange(len(x)), image_class] = 0.9
    settings = DistillConfig(epochs=3, width=4, alpha=1.0)
    student = distill(x, noise, teacher, x, noise, settings, CONFIG.model_copy(update={"lr": 0.05}), RUNTIME)
    assert student.model.config.width == 4 and len(student.history) == 3
    x_new, y_new = _data(90, seed=5)
    assert (predict_proba(student, x_new, RUNTIME).argmax(1) == y_new).mean() >= 0.9


def test_one_hot_probability_targets_train_the_model_that_class_ids_train():
    x, y = _data(64)
    hard = fit(x, y, x, y, num_classes=3, config=CONFIG, runtime=RUNTIME)
    soft = fit(x, np.eye(3, dtype=np.float32)[y], x, y, num_classes=3, config=CONFIG, runtime=RUNTIME)
    np.testing.assert_allclose(soft.val_proba, hard.val_proba, atol=1e-4)
    assert [h["val_accuracy"] for h in soft.history] == [h["val_accuracy"] for h in hard.history]


def test_soft_targets_of_the_wrong_shape_or_not_probabilities_are_refused():
    x, y = _data(8)
    with pytest.raises(ValueError, match=r"soft targets must have shape \(N, 3\), got \(8, 2\)"):
        fit(x, np.full((8, 2), 0.5), x, y, num_classes=3, config=CONFIG, runtime=RUNTIME)
    with pytest.raises(ValueError, match="non-negative rows that sum to 1"):
        fit(x, np.full((8, 3), 0.5), x, y, num_classes=3, config=CONFIG, runtime=RUNTIME)
    with pytest.raises(ValueError, match="8 training inputs but 7 targets"):
        fit(x, y[:7], x, y, num_classes=3, config=CONFIG, runtime=RUNTIME)


def test_the_student_recipe_is_the_shared_one_with_its_own_size_and_length_and_no_shifted_copies():
    train = TrainConfig(lr=0.02, epochs=12, width=32, depth=1, tta_shift=1)
    recipe = student_config(DistillConfig(epochs=2, width=8, depth=2, lr=None, dropout=None), train)
    assert (recipe.epochs, recipe.width, recipe.depth, recipe.lr, recipe.tta) == (2, 8, 2, 0.02, True)
    assert recipe.tta_shift == 0  # the student is there to serve fast
    own = student_config(DistillConfig(lr=0.1, dropout=0.3), train)
    assert (own.lr, own.dropout) == (0.1, 0.3)


# The distill step on a tiny project: 10 classes, each a bright block at its own place.
TINY_TRAIN = TrainConfig(epochs=1, batch_size=32, width=4, hflip=False, tta=False, lr=0.05, seed=0)


def _blocks(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        images[i, 7 * row : 7 * row + 7, 7 * col : 7 * col + 7] = 230
    return images, labels


def _tiny_project(root: Path) -> ProjectPaths:
    """clean.npz, splits.npz and a one-view fused bundle (data/fused/), as the pipeline writes them."""
    paths = ProjectPaths(root)
    sizes = {0: 300, 1: 100, 2: 100}  # train, val, test
    images, labels = _blocks(sum(sizes.values()), seed=0)
    split = np.repeat(list(sizes), list(sizes.values())).astype(np.int8)
    index = np.arange(len(labels))
    write_npz(paths.clean, images=images, labels=labels, origin=(split == 2).astype(np.int8), index=index)
    write_npz(paths.splits, origin=(split == 2).astype(np.int8), index=index, label=labels, split=split, fold=index % 2)
    x = {code: Pixels(images[split == code]) for code in sizes}
    view = fit(x[0], labels[split == 0], x[1], labels[split == 1], 10, TINY_TRAIN, RUNTIME)
    (root / "view").mkdir()
    ViewModel(level="fine", reader=ImageReader(resolution=28), networks=[view]).save(root / "view")
    paths.fused_dir.mkdir(parents=True)
    record = pass_through_record("fine-28", np.arange(10))  # a one-view teacher
    write_bundle(paths.fused_dir, REPO / "data" / "taxonomy.yaml", record, {"fine-28": root / "view"}, ImageInput((28, 28)))
    write_npz(paths.fused_dir / "predictions.npz", test_proba=predict_proba(view, x[2], RUNTIME))
    return paths


def test_the_distill_step_writes_a_student_bundle_that_serves(tmp_path):
    paths = _tiny_project(tmp_path)
    settings = DistillConfig(enabled=True, epochs=1, width=4, temperature=2.0, alpha=0.5, quantize=True, prune_amount=0.3)
    config = Config().model_copy(update={"distill": settings, "train": TINY_TRAIN.model_copy(update={"threads": 1})})
    epochs = []
    report = distill_step(config, paths, on_epoch=epochs.append)

    assert [e["epoch"] for e in epochs] == [1]
    assert report["served"] == "int8" and list(report["variants"]) == ["float", "pruned", "int8"]
    assert 0 <= report["teacher"]["test_accuracy"] <= 1
    for figures in report["variants"].values():
        assert {"accuracy", "ms_per_batch", "images_per_s", "parameters", "state_dict_bytes", "sparsity"} <= set(figures)
        assert figures["ms_per_batch"] > 0 and figures["images_per_s"] > 0
    assert report["variants"]["pruned"]["sparsity"] == pytest.approx(0.3, abs=0.01)
    assert json.loads((paths.student_dir / "report.json").read_text())["served"] == "int8"
    metrics = report_metrics(report)
    assert metrics["distill.int8.accuracy"] == report["variants"]["int8"]["accuracy"]
    assert all(isinstance(v, float) for v in metrics.values())

    student = FusedClassifier.load(paths.student_dir)  # the compressed student, through the serving path
    assert list(student.views) == ["student"]
    test_images = np.load(paths.clean)["images"][-100:]
    served = student.predict_proba(test_images)
    np.testing.assert_allclose(served, np.load(paths.student_dir / "predictions.npz")["test_proba"], atol=1e-5)
    test_labels = np.load(paths.splits)["label"][-100:]
    assert (served.argmax(1) == test_labels).mean() == pytest.approx(report["variants"]["int8"]["accuracy"])
    assert not paths.checkpoints("student").exists()  # removed once the student is saved


def test_a_disabled_distill_step_writes_only_a_record_that_it_was_off(tmp_path):
    paths = ProjectPaths(tmp_path)
    config = Config().model_copy(update={"distill": DistillConfig(enabled=False)})
    assert distill_step(config, paths) == {"enabled": False}
    assert json.loads((paths.student_dir / "report.json").read_text()) == {"enabled": False}


@pytest.mark.slow
def test_the_distill_task_logs_the_report_to_the_parent_run(tmp_path):
    from mlflow.tracking import MlflowClient
    from prefect.logging import disable_run_logger

    from tasks.evaluation import distill_student
    from tasks.tracking import RunRef, open_experiment

    paths = _tiny_project(tmp_path)
    config = Config().model_copy(update={
        "distill": DistillConfig(enabled=True, epochs=1, width=4), "train": TINY_TRAIN.model_copy(update={"threads": 1}),
    })
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client, experiment_id = open_experiment(uri, "granular", tmp_path / "mlartifacts")
    run_id = client.create_run(experiment_id).info.run_id
    with disable_run_logger():
        report = distill_student.fn(config, paths, RunRef(uri=uri, experiment_id=experiment_id, run_id=run_id))
    logged = MlflowClient(uri).get_run(run_id).data.metrics
    assert logged["distill.float.accuracy"] == pytest.approx(report["variants"]["float"]["accuracy"])
    assert logged["distill.teacher.test_accuracy"] == pytest.approx(report["teacher"]["test_accuracy"])
    assert [a.path for a in MlflowClient(uri).list_artifacts(run_id, "distill")] == ["distill/report.json"]
