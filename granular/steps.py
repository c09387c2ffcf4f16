"""The pipeline's steps, each reading its inputs from files and writing its outputs atomically.

Both entry points call these same functions: the Prefect tasks in tasks/ and the DVC stages
(`python -m granular.stages STEP`, see dvc.yaml).
"""
from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from granular import evaluate, fusion, partition, plots, segments, table_steps
from granular.atomic import atomic_dir, read_npz, write_csv, write_json, write_npz
from granular.clean import clean, subsample
from granular.config import Config
from granular.paths import ProjectPaths
from granular.predict import write_bundle
from granular.sources import ORIGINS, RawDataset, import_raw, load_raw
from granular.taxonomy import Taxonomy, load_taxonomy
from granular.validate import validate


def _taxonomy(config: Config, paths: ProjectPaths) -> Taxonomy:
    return load_taxonomy(table_steps.taxonomy_path(config, paths))


def file_digest(path: Path) -> str:
    digest = hashlib.md5()  # the hash DVC uses for files, so the two can be compared
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_dataset(path: Path) -> RawDataset:
    arrays = read_npz(path)
    return RawDataset(images=arrays["images"], labels=arrays["labels"], origin=arrays["origin"], index=arrays["index"])


def import_raw_step(config: Config, paths: ProjectPaths) -> dict:
    if config.is_table:
        files = table_steps.import_raw(config, paths)
    else:
        files = import_raw(config.data.source.format, paths.resolve(config.data.source.path, "data.source.path"), paths.raw)
    return {"files": {str(f.relative_to(paths.raw)): file_digest(f) for f in files}}


def clean_step(config: Config, paths: ProjectPaths) -> dict:
    if config.is_table:
        return table_steps.clean(config, paths)
    taxonomy = _taxonomy(config, paths)
    raw = load_raw(config.data.source.format, paths.raw, list(taxonomy.fine_names))
    raw = subsample(raw, config.data.limit, config.data.limit_seed)
    result = clean(raw, num_classes=len(taxonomy.fine_names), max_pixel=config.clean.max_pixel)
    with atomic_dir(paths.quarantine) as staging:
        rejected = result.rejected
        write_npz(
            staging / "rejected.npz",
            images=rejected.images, labels=rejected.labels, origin=rejected.origin,
            index=rejected.index, reason=result.reasons,
        )
        listing = pd.DataFrame({  # csv quoting: a reason may hold a comma ("outside [0, 255]")
            "origin": np.asarray(ORIGINS)[rejected.origin] if len(rejected) else np.array([], dtype=str),
            "index": rejected.index, "label": rejected.labels, "reason": result.reasons,
        })
        listing.to_csv(staging / paths.quarantine_csv.name, index=False)
    kept = result.kept
    write_npz(paths.clean, images=kept.images, labels=kept.labels, origin=kept.origin, index=kept.index)
    report = result.report()
    write_json(paths.clean_report, report)
    return report


def validate_step(config: Config, paths: ProjectPaths) -> dict:
    """Validate clean.npz; write the short report (validation.json), GX's full result of every
    suite and its Data Docs (validation/), also when validation fails, and then raise."""
    with atomic_dir(paths.validation_dir) as staging:  # written whole, pass or fail
        if config.is_table:
            validation = table_steps.validate(config, paths, docs_dir=staging / "data_docs")
        else:
            validation = _validate_images(config, paths, docs_dir=staging / "data_docs")
        write_json(staging / "result.json", {**validation.report, "suites": validation.results})
    write_json(paths.validation_report, validation.report)  # kept for the user to read
    validation.raise_if_failed()
    return validation.report


def _validate_images(config: Config, paths: ProjectPaths, docs_dir: Path):
    source = (
        f"{paths.clean.relative_to(paths.root)} (cleaned from {paths.raw.relative_to(paths.root)}, "
        f"{config.data.source.format} files imported from {paths.resolve(config.data.source.path, 'data.source.path')})"
    )
    taxonomy = _taxonomy(config, paths)
    return validate(
        _load_dataset(paths.clean), config.validate_, num_classes=len(taxonomy.fine_names), source=source,
        docs_dir=docs_dir,
    )


def split_step(config: Config, paths: ProjectPaths) -> dict:
    """Assign every example to train/val/test once, for all views: splits.npz."""
    if config.is_table:
        return table_steps.split(config, paths, _taxonomy(config, paths))
    data = _load_dataset(paths.clean)
    split = partition.assign_splits(data.labels, data.origin, config.split.val_fraction, config.split.seed)
    partition.check_every_class_in_every_split(data.labels, split, _taxonomy(config, paths))
    fold = partition.assign_folds(data.labels, split, config.split.folds, config.split.seed)
    write_npz(paths.splits, origin=data.origin, index=data.index, label=data.labels, split=split, fold=fold)
    return {name: int((split == code).sum()) for code, name in enumerate(partition.SPLITS)}


def view_step(config: Config, paths: ProjectPaths, view_name: str) -> dict:
    """Write one view's train/val/test files; return their content hashes and sizes."""
    if config.is_table:
        return table_steps.view(config, paths, view_name, _taxonomy(config, paths))
    taxonomy = _taxonomy(config, paths)
    data = _load_dataset(paths.clean)
    split = read_npz(paths.splits)["split"]
    view = config.view(view_name)
    arrays_by_split = partition.build_view(data, split, taxonomy, view)
    hashes = {}
    with atomic_dir(paths.view_dir(view_name)) as staging:
        if view.segments:  # learned on the training split, then every example is routed by it
            segmenter = segments.fit_segmenter(
                data.images[split == partition.TRAIN_SPLIT], view.segments, seed=config.split.seed
            )
            segment = segmenter.assign(data.images)
            segments.check_segment_sizes(segment, split, segmenter.count, view.segments.min_size, f"view {view.name}")
            for code, split_name in enumerate(partition.SPLITS):
                arrays_by_split[split_name]["segment"] = segment[split == code]
            segmenter.save(staging / segments.SEGMENTER_FILE)
        for split_name, arrays in arrays_by_split.items():
            target = staging / paths.view_split(view_name, split_name).name
            write_npz(target, **arrays)
            hashes[split_name] = {"md5": file_digest(target), "n": int(len(arrays["y"]))}
    return hashes


def train_step(config: Config, paths: ProjectPaths, view_name: str, on_epoch=None, warn=print, gpu: int = 0) -> dict:
    """Train one view (one network, or one expert per segment); write its model, history and
    val/test probabilities, each example predicted by the expert of its segment. A training
    that was killed resumes from its last checkpoint."""
    from granular import train  # torch is imported only by the steps that need it
    from granular.device import select_runtime
    from granular.view_model import save_view_model

    view = config.view(view_name)
    taxonomy = _taxonomy(config, paths)
    train_config = config.train_config(view)
    runtime = select_runtime(train_config.threads, gpu)
    if config.is_table:
        return table_steps.train(config, paths, view_name, runtime, on_epoch=on_epoch, warn=warn)
    splits = {s: read_npz(paths.view_split(view.name, s)) for s in partition.SPLITS}
    segment = {s: arrays.get("segment", np.zeros(len(arrays["y"]), dtype=np.int64)) for s, arrays in splits.items()}
    num_classes = taxonomy.num_classes(view.level)
    val_proba = np.zeros((len(splits["val"]["y"]), num_classes), dtype=np.float32)
    experts, history = [], []
    started = time.perf_counter()
    for number in range(view.segments.count if view.segments else 1):
        rows = {s: segment[s] == number for s in ("train", "val")}
        tag = {"segment": number} if view.segments else {}

        def record_epoch(record: dict, tag: dict = tag) -> None:
            history.append({**tag, **record})
            if on_epoch is not None:
                on_epoch(history[-1])

        expert_config = train_config.model_copy(update={"seed": train_config.seed + number})
        expert = train.fit(
            splits["train"]["x"][rows["train"]], splits["train"]["y"][rows["train"]],
            splits["val"]["x"][rows["val"]], splits["val"]["y"][rows["val"]], num_classes=num_classes,
            config=expert_config, runtime=runtime, on_epoch=record_epoch,
            checkpoint_dir=paths.checkpoints(view.name) / (f"segment-{number}" if view.segments else "model"),
            warn=warn,
        )
        expert.meta = {
            "view": view.model_dump(),
            "train_config": expert_config.model_dump(),
            "class_names": list(taxonomy.names[view.level]),
            **tag,
        }
        val_proba[rows["val"]] = expert.val_proba  # measured by fit after the last epoch
        experts.append(expert)
    seconds = time.perf_counter() - started
    test_proba = train.predict_routed(experts, segment["test"], splits["test"]["x"], runtime)
    segmenter_file = paths.view_dir(view.name) / segments.SEGMENTER_FILE if view.segments else None
    with atomic_dir(paths.model_dir(view.name)) as staging:
        save_view_model(staging, experts, segmenter_file)
        write_npz(staging / "predictions.npz", val_proba=val_proba, test_proba=test_proba)
        write_json(staging / "history.json", history)
        plots.save_learning_curves_png(staging / "learning_curves.png", history, title=view.name)
    shutil.rmtree(paths.checkpoints(view.name), ignore_errors=True)  # the model is saved: not needed
    return {
        "view": view.name,
        "device": runtime.name,
        "train_seconds": seconds,
        "history": history,
        "val_accuracy": float((val_proba.argmax(1) == splits["val"]["y"]).mean()),
    }


def _split_rows(paths: ProjectPaths, split_name: str) -> dict[str, np.ndarray]:
    """Every column of splits.npz (label, fold, ...) for the examples of one split."""
    splits = read_npz(paths.splits)
    rows = splits["split"] == partition.SPLITS.index(split_name)
    return {column: values[rows] for column, values in splits.items()}


def _view_probas(config: Config, paths: ProjectPaths, key: str) -> dict[str, np.ndarray]:
    return {name: read_npz(paths.model_dir(name) / "predictions.npz")[key] for name in config.views}


def fuse_step(config: Config, paths: ProjectPaths) -> dict:
    """Fit the fusion on validation predictions; write its parameters and fused test predictions."""
    taxonomy = _taxonomy(config, paths)
    parents = {v.name: taxonomy.parent[v.level] for v in config.views.values()}
    val = _split_rows(paths, "val")
    fuser, choice = fusion.choose_fusion(
        config.fusion, parents, _view_probas(config, paths, "val_proba"), val["label"], folds=val["fold"]
    )
    test_proba = fuser.predict_proba(_view_probas(config, paths, "test_proba"))
    with atomic_dir(paths.fused_dir) as staging:
        write_bundle(
            staging, table_steps.taxonomy_path(config, paths), choice,
            {name: paths.model_dir(name) for name in config.views}, **_input_spec(config, paths),
        )
        write_npz(staging / "predictions.npz", test_proba=test_proba)
    return choice


def _input_spec(config: Config, paths: ProjectPaths) -> dict:
    """What a bundle's model reads: images of this shape, or these columns of a table."""
    if config.is_table:
        return {"table_columns": table_steps.feature_columns(table_steps.load_schema(paths.table_schema))}
    return {"image_shape": config.validate_.image_shape}


STUDENT = "student"  # the distilled network's name: its view in the student bundle, its checkpoints


def distill_step(config: Config, paths: ProjectPaths, on_epoch=None, warn=print) -> dict:
    """Distil the fused model (data/fused/) into one student network trained on the training
    split's clean images at full resolution, compress it as `distill` asks, and write it as a
    servable bundle (data/student/: the student as the single view of an identity fusion),
    with its val/test probabilities and report.json: test accuracy, latency and size of the
    student before and after each compression, next to the teacher's test accuracy."""
    from granular import compress, distill  # torch is imported only by the steps that need it
    from granular.config import ViewConfig
    from granular.device import select_runtime
    from granular.predict import FusedClassifier

    settings = config.distill
    if not settings.enabled:  # DVC runs every stage: leave a record that says why it is empty
        report = {"enabled": False}
        with atomic_dir(paths.student_dir) as staging:
            write_json(staging / "report.json", report)
        return report
    images, labels = _images_by_split(paths)
    started = time.perf_counter()
    teacher = FusedClassifier.load(paths.fused_dir)
    teacher_proba = distill.teacher_targets(teacher, images["train"], temperature=settings.temperature)
    teacher_seconds = time.perf_counter() - started
    taxonomy = teacher.taxonomy
    runtime = select_runtime(config.train.threads)
    started = time.perf_counter()
    student = distill.distill(
        images["train"], labels["train"], teacher_proba, images["val"], labels["val"], settings, config.train,
        runtime, on_epoch=on_epoch, checkpoint_dir=paths.checkpoints(STUDENT), warn=warn,
    )
    train_seconds = time.perf_counter() - started
    student.meta = {
        "view": ViewConfig(level=taxonomy.fine, resolution=images["train"].shape[1]).model_dump(),
        "train_config": distill.student_config(settings, config.train).model_dump(),
        "distill": settings.model_dump(),
        "class_names": list(taxonomy.names[taxonomy.fine]),
    }
    variants = compress.compressed_variants(student, settings.prune_amount, settings.quantize)
    teacher_test = read_npz(paths.fused_dir / "predictions.npz")["test_proba"]
    report = {
        "teacher": {"test_accuracy": float((teacher_test.argmax(1) == labels["test"]).mean()), "seconds": teacher_seconds},
        "student": {"train_seconds": train_seconds, "history": student.history},
        "variants": compress.compression_report(variants, images["test"], labels["test"], runtime),
        "served": list(variants)[-1],
    }
    _write_student_bundle(paths, taxonomy, variants, images, runtime, report)
    shutil.rmtree(paths.checkpoints(STUDENT), ignore_errors=True)  # the student is saved: not needed
    return report


def _write_student_bundle(paths: ProjectPaths, taxonomy: Taxonomy, variants: dict, images: dict, runtime, report: dict) -> None:
    """data/student/: a bundle that FusedClassifier loads (the served variant as the one view
    of an identity fusion), its val/test probabilities, and the report."""
    from granular import compress, train
    from granular.predict import TAXONOMY_FILE, VIEWS_DIR
    from granular.view_model import MODEL_FILE

    served = variants[report["served"]]
    served_runtime = compress.runtime_for(served.model, runtime)
    with atomic_dir(paths.student_dir) as staging:
        fusion_record = fusion.pass_through_record(STUDENT, taxonomy.parent[taxonomy.fine])
        write_bundle(staging, paths.fused_dir / TAXONOMY_FILE, fusion_record, {}, image_shape=images["train"].shape[1:])
        (staging / VIEWS_DIR / STUDENT).mkdir(parents=True)
        compress.save_served(staging / VIEWS_DIR / STUDENT / MODEL_FILE, variants)
        write_npz(
            staging / "predictions.npz",
            val_proba=train.predict_proba(served, images["val"], served_runtime),
            test_proba=train.predict_proba(served, images["test"], served_runtime),
        )
        write_json(staging / "report.json", report)


def _images_by_split(paths: ProjectPaths) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The clean images at full resolution and their fine labels, by split."""
    images = _load_dataset(paths.clean).images
    splits = read_npz(paths.splits)  # one row per clean example, in the same order
    rows = {name: splits["split"] == code for code, name in enumerate(partition.SPLITS)}
    return {n: images[r] for n, r in rows.items()}, {n: splits["label"][r] for n, r in rows.items()}


LATENCY_IMAGES = 512  # test images timed per model: a few seconds in all, on a CPU too
LATENCY_BATCH = 256
COMPARISON_COLUMNS = (  # model quality only: latency is a figure of the machine
    "accuracy", "accuracy_ci_low", "accuracy_ci_high", "macro_f1", "macro_f1_ci_low", "macro_f1_ci_high",
    "ece", "hierarchical_f1", "mistake_severity",
)


def evaluate_step(config: Config, paths: ProjectPaths) -> dict:
    """Every view and the fusion on the test split: accuracy and macro-F1 with bootstrap 95%
    intervals (the same resamples for every model), per-class scores, calibration, and for fine
    models the hierarchical scores and the accuracy they imply at coarser levels; the fusion
    against the best single fine view (paired interval, McNemar's test); inference latency."""
    taxonomy = _taxonomy(config, paths)
    y_fine = _split_rows(paths, "test")["label"]
    test_probas = _view_probas(config, paths, "test_proba")
    entries = [(v.name, v.level, test_probas[v.name]) for v in config.views.values()]
    entries.append(("fused", taxonomy.fine, read_npz(paths.fused_dir / "predictions.npz")["test_proba"]))
    if config.distill.enabled:
        entries.append((STUDENT, taxonomy.fine, read_npz(paths.student_dir / "predictions.npz")["test_proba"]))
    if config.is_table:  # gradient-boosted trees on the same splits: what the networks must beat
        baseline = table_steps.baseline(config, paths)
        entries.append((table_steps.BASELINE, taxonomy.fine, baseline.pop("test_proba")))
    resamples = evaluate.resample_counts(len(y_fine))
    test, details = {}, {}
    for name, level, proba in entries:
        test[name], details[name] = _score_model(taxonomy, level, y_fine, proba, resamples)
    fine_views = [v.name for v in config.views.values() if v.level == taxonomy.fine]
    best = max(fine_views, key=lambda n: test[n]["accuracy"]) if fine_views else None
    metrics = {"test": test, "best_single": best}
    by_segment = _accuracy_by_segment(config, paths, taxonomy, y_fine, test_probas)
    if by_segment:
        metrics["segments"] = by_segment
    if best:
        metrics["fused_minus_best_single"] = test["fused"]["accuracy"] - test[best]["accuracy"]
        metrics.update(_fused_versus_best(details["fused"]["correct"], details[best]["correct"], best, resamples))
    if config.is_table:
        metrics["baseline"] = {"model": table_steps.BASELINE, **baseline}
    metrics["bootstrap"] = {
        "resamples": resamples.resamples, "seed": evaluate.BOOTSTRAP_SEED, "confidence": evaluate.CONFIDENCE
    }
    _write_evaluation(paths, taxonomy, y_fine, test, details)
    write_json(paths.metrics, metrics)
    # A figure of this machine: beside the metrics, so that `dvc metrics diff` shows model quality.
    latency = _latency(config, paths)
    write_json(paths.latency, latency)
    return {**metrics, "latency": latency}


def _score_model(
    taxonomy: Taxonomy, level: str, y_fine: np.ndarray, proba: np.ndarray, resamples: evaluate.Resamples
) -> tuple[dict, dict]:
    """One model's flat scores (floats for MLflow, intervals as `<metric>_ci_low/_high`) and
    the details written beside them: confusion, per-class scores, reliability bins."""
    y = taxonomy.map_labels(y_fine, level)
    scores = evaluate.classification_metrics(y, proba)
    matrix = scores.pop("confusion")
    predicted = proba.argmax(axis=1)
    correct = predicted == y
    intervals = {
        "accuracy": evaluate.resampled_means(resamples, correct),
        "macro_f1": evaluate.resampled_macro_f1(resamples, y, predicted, proba.shape[1]),
    }
    for metric, samples in intervals.items():
        scores[f"{metric}_ci_low"], scores[f"{metric}_ci_high"] = evaluate.percentile_interval(samples)
    calibration = evaluate.calibration(proba, y)
    scores["ece"] = calibration["ece"]
    scores["level"] = level
    if level == taxonomy.fine:  # what a fine prediction implies one level up, and so on
        for coarser in taxonomy.levels[1:]:
            implied = taxonomy.map_labels(predicted, coarser) == taxonomy.map_labels(y_fine, coarser)
            scores[f"{coarser}_accuracy"] = float(implied.mean())
        scores.update(evaluate.hierarchical_metrics(taxonomy, y_fine, predicted))
    per_class = evaluate.per_class_metrics(matrix)
    details = {
        "classes": taxonomy.names[level],
        "confusion": matrix,
        "predicted": predicted,
        "correct": correct,
        "per_class": [
            {"class": name, **{key: values[i].item() for key, values in per_class.items()}}
            for i, name in enumerate(taxonomy.names[level])
        ],
        "reliability": calibration["bins"],
    }
    return scores, details


def _fused_versus_best(
    fused_correct: np.ndarray, best_correct: np.ndarray, best: str, resamples: evaluate.Resamples
) -> dict:
    """Is the fusion's gain over the best single view more than chance? A paired bootstrap
    interval of the accuracy difference, and McNemar's test on the examples they disagree on."""
    difference = evaluate.resampled_means(resamples, fused_correct.astype(np.float32) - best_correct)
    low, high = evaluate.percentile_interval(difference)
    return {
        "fused_minus_best_single_ci": {"low": low, "high": high},
        "mcnemar": {"versus": best, **evaluate.mcnemar(fused_correct, best_correct)},
    }


def _latency(config: Config, paths: ProjectPaths) -> dict:
    """Inference speed of each view's model and of the fused model, loaded from their files, on
    the first test images at full size."""
    from granular.device import select_runtime  # torch is imported only by the steps that need it
    from granular.predict import FusedClassifier
    from granular.view_model import ViewModel

    images = _test_inputs(config, paths, LATENCY_IMAGES)
    runtime = select_runtime()
    predictors = {}
    for name in config.views:
        model = ViewModel.load(paths.model_dir(name), runtime)
        predictors[name] = lambda batch, model=model: model.predict_proba(batch, runtime)
    predictors["fused"] = FusedClassifier.load(paths.fused_dir).predict_proba
    if config.distill.enabled:
        predictors[STUDENT] = FusedClassifier.load(paths.student_dir).predict_proba
    latency = {"device": runtime.name, "images": int(len(images)), "batch_size": LATENCY_BATCH}
    for name, predict in predictors.items():
        latency[name] = evaluate.measure_latency(predict, images, LATENCY_BATCH)
    return latency


def _write_evaluation(paths: ProjectPaths, taxonomy: Taxonomy, y_fine: np.ndarray, test: dict, details: dict) -> None:
    """Confusion and reliability images, per-class scores, every test prediction, the models compared."""
    with atomic_dir(paths.confusion) as staging:
        for name, detail in details.items():
            plots.save_confusion_png(staging / f"{name}.png", detail["confusion"], detail["classes"], title=name)
            write_json(staging / f"{name}.json", {"classes": list(detail["classes"]), "matrix": detail["confusion"].tolist()})
    with atomic_dir(paths.reliability) as staging:
        for name, detail in details.items():
            title = f"{name}: ECE {test[name]['ece']:.4f}"
            plots.save_reliability_png(staging / f"{name}.png", detail["reliability"], title=title)
    write_json(paths.per_class, {
        name: {"level": test[name]["level"], "per_class": detail["per_class"], "reliability": detail["reliability"]}
        for name, detail in details.items()
    })
    truth = {  # "actual" is the finest level, then "actual_<level>" for each coarser one
        "actual" if level == taxonomy.fine else f"actual_{level}":
            np.asarray(taxonomy.names[level])[taxonomy.map_labels(y_fine, level)]
        for level in taxonomy.levels
    }
    predicted_names = {name: np.asarray(d["classes"])[d["predicted"]] for name, d in details.items()}
    write_csv(paths.test_predictions, pd.DataFrame({**truth, **predicted_names}))
    write_csv(paths.comparison, pd.DataFrame([
        {"model": name, **{column: scores.get(column) for column in COMPARISON_COLUMNS}} for name, scores in test.items()
    ]))


def _accuracy_by_segment(
    config: Config, paths: ProjectPaths, taxonomy: Taxonomy, y_fine: np.ndarray, test_probas: dict[str, np.ndarray]
) -> dict:
    """For each segmented view, per test segment: its expert's accuracy next to the global
    model's on the same examples, so the user sees where the experts earn their keep."""
    out = {}
    for view in config.views.values():
        if not view.segments:
            continue
        segment = read_npz(paths.view_split(view.name, "test"))["segment"]
        y = taxonomy.map_labels(y_fine, view.level)
        right = {"accuracy": test_probas[view.name].argmax(1) == y}
        if view.global_name in test_probas:  # absent when it failed to train and the run went on
            right["global_accuracy"] = test_probas[view.global_name].argmax(1) == y
        # Clusters are numbered; a table's segments are the values of its column.
        names = {value: f"segment-{value}" if view.segments.by == "clusters" else str(value) for value in np.unique(segment)}
        out[view.name] = {
            name: {
                "n": int((segment == value).sum()),
                **{key: float(correct[segment == value].mean()) for key, correct in right.items()},
            }
            for value, name in names.items()
        }
    return out


def _test_inputs(config: Config, paths: ProjectPaths, count: int):
    """The first `count` test examples as a model takes them: images, or a table's rows."""
    if config.is_table:
        return table_steps.test_rows(config, paths, count)
    test = read_npz(paths.splits)["split"] == partition.TEST_SPLIT
    return _load_dataset(paths.clean).images[test][:count]


def example_inputs(config: Config, paths: ProjectPaths, count: int = 3):
    """A few cleaned test examples: the input example stored with the served model."""
    return _test_inputs(config, paths, count)
