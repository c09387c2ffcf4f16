"""Step distill: one student network learns the fused model's predictions, is compressed as
`distill` asks, and is written as a servable bundle (data/student/)."""
from __future__ import annotations

import shutil
import time

from granular.config import Config
from granular.config.cascade import STUDENT  # the distilled network's name: its view, its checkpoints
from granular.core import fusion
from granular.core.partition import SPLITS
from granular.core.taxonomy import Taxonomy
from granular.modalities import modality_for
from granular.modalities.experts import ViewReader, network_file, write_view_spec
from granular.pipeline.reads import split_rows
from granular.serving.bundle import TAXONOMY_FILE, VIEWS_DIR, write_bundle
from granular.store.atomic import atomic_dir, read_npz, write_json, write_npz
from granular.store.paths import ProjectPaths



def distill_step(config: Config, paths: ProjectPaths, on_epoch=None, warn=print) -> dict:
    """Train the student on the training split's clean examples at their full size against the
    fused model's (tempered) probabilities; write data/student/: the student as the single view
    of an identity fusion, its val/test probabilities and report.json: test accuracy, latency
    and size of the student before and after each compression, next to the teacher's accuracy."""
    from granular.nn import compress, distill  # torch is imported only by the steps that need it
    from granular.nn.device import select_runtime
    from granular.serving.predict import FusedClassifier

    settings = config.distill
    if not settings.enabled:  # DVC runs every stage: leave a record that says why it is empty
        report = {"enabled": False}
        with atomic_dir(paths.student_dir) as staging:
            write_json(staging / "report.json", report)
        return report
    modality = modality_for(config)
    reader = modality.student_reader(config, paths)
    raw = modality.raw_inputs(config, paths, SPLITS)
    labels = {s: split_rows(paths, s)["label"] for s in SPLITS}
    started = time.perf_counter()
    teacher = FusedClassifier.load(paths.fused_dir)
    teacher_proba = distill.teacher_targets(teacher, raw["train"], temperature=settings.temperature)
    teacher_seconds = time.perf_counter() - started
    runtime = select_runtime(config.train.threads, precision=config.train.precision)
    x = {s: reader.network_inputs(raw[s]) for s in SPLITS}
    started = time.perf_counter()
    student = distill.distill(
        x["train"], labels["train"], teacher_proba, x["val"], labels["val"], settings, config.train,
        runtime, on_epoch=on_epoch, checkpoint_dir=paths.checkpoints(STUDENT), warn=warn,
    )
    train_seconds = time.perf_counter() - started
    classes = teacher.taxonomy
    student.meta = {
        "train_config": distill.student_config(settings, config.train).model_dump(),
        "distill": settings.model_dump(),
        "class_names": list(classes.names[classes.fine]),
    }
    variants = compress.compressed_variants(student, settings.prune_amount, settings.quantize)
    teacher_test = read_npz(paths.fused_dir / "predictions.npz")["test_proba"]
    report = {
        "teacher": {"test_accuracy": float((teacher_test.argmax(1) == labels["test"]).mean()), "seconds": teacher_seconds},
        "student": {"train_seconds": train_seconds, "history": student.history},
        "variants": compress.compression_report(variants, x["test"], labels["test"], runtime),
        "served": list(variants)[-1],
    }
    _write_student_bundle(config, paths, classes, reader, variants, x, runtime, report)
    shutil.rmtree(paths.checkpoints(STUDENT), ignore_errors=True)  # the student is saved: not needed
    return report


def _write_student_bundle(
    config: Config, paths: ProjectPaths, classes: Taxonomy, reader: ViewReader, variants: dict, x: dict, runtime,
    report: dict,
) -> None:
    """data/student/: a bundle that FusedClassifier loads (the served variant as the one view
    of an identity fusion), its val/test probabilities, and the report."""
    from granular.nn import compress, predict

    served = variants[report["served"]]
    with atomic_dir(paths.student_dir) as staging:
        fusion_record = fusion.pass_through_record(STUDENT, classes.parent[classes.fine])
        input_spec = modality_for(config).input_spec(config, paths)
        write_bundle(staging, paths.fused_dir / TAXONOMY_FILE, fusion_record, {}, input_spec)
        view_dir = staging / VIEWS_DIR / STUDENT
        view_dir.mkdir(parents=True)
        write_view_spec(view_dir, classes.fine, reader, networks=1)
        compress.save_served(view_dir / network_file(0), variants)
        write_npz(
            staging / "predictions.npz",
            val_proba=predict.predict_proba(served, x["val"], runtime),
            test_proba=predict.predict_proba(served, x["test"], runtime),
        )
        write_json(staging / "report.json", report)
