"""Step fuse: fit the fusion of the views on validation predictions (a regression target's by
stacking their values); write the fused model as a bundle (data/fused/) and its test
predictions. The modality's baselines are fitted here too (data/baselines/): one that can serve,
a table's boosted trees, is one more input of the fusion, so the fused model has it to fall
back on."""
from __future__ import annotations

from functools import partial

import numpy as np

from granular.config import Config
from granular.core import fusion, value_fusion
from granular.core.taxonomy import Taxonomy
from granular.core.threshold import choose_threshold
from granular.modalities import modality_for
from granular.pipeline.reads import project_taxonomy, specialist_class_ids, split_rows, split_values, view_probas
from granular.serving.bundle import VIEWS_DIR, write_bundle
from granular.store.atomic import atomic_dir, write_json, write_npz
from granular.store.paths import ProjectPaths

BASELINE_PREDICTIONS = "predictions.npz"  # in data/baselines/: each baseline's test probabilities
BASELINE_FIGURES = "figures.json"  # ... and its figures of this machine (training seconds)


def fuse_step(config: Config, paths: ProjectPaths) -> dict:
    modality = modality_for(config)
    classes = project_taxonomy(config, paths)
    baselines = modality.baselines(config, paths)
    served = {name: baseline for name, baseline in baselines.items() if baseline.model is not None}
    if config.regression:
        choice, test_proba = _fuse_values(config, paths, classes, served)
    else:
        choice, test_proba = _fuse_classes(config, paths, classes, served)
    with atomic_dir(paths.fused_dir) as staging:
        write_bundle(
            staging, paths.taxonomy(config.taxonomy), choice, {name: paths.model_dir(name) for name in config.views},
            modality.input_spec(config, paths),
        )
        for name, baseline in served.items():
            (staging / VIEWS_DIR / name).mkdir(parents=True)
            baseline.model.save(staging / VIEWS_DIR / name)
        write_npz(staging / "predictions.npz", test_proba=test_proba)
    with atomic_dir(paths.baselines_dir) as staging:
        write_npz(staging / BASELINE_PREDICTIONS, **{name: b.test_proba for name, b in baselines.items()})
        write_json(staging / BASELINE_FIGURES, {name: b.figures for name, b in baselines.items()})
    return choice


def _fuse_classes(config: Config, paths: ProjectPaths, classes: Taxonomy, served: dict) -> tuple[dict, np.ndarray]:
    """The fusion of class probabilities (granular/core/fusion.py) and its test probabilities."""
    parents = {v.name: classes.parent[v.level] for v in config.views.values()}
    parents |= {name: classes.parent[classes.fine] for name in served}
    val = split_rows(paths, "val")
    val_probas = view_probas(config, paths, "val_proba") | {name: b.val_proba for name, b in served.items()}
    specialists = specialist_class_ids(config, classes)
    fuser, choice = fusion.choose_fusion(
        config.fusion, parents, val_probas, val["label"], folds=val["fold"], specialists=specialists,
    )
    if config.fusion.threshold_metric:
        held_out = fusion.held_out_proba(
            partial(fusion.build_fuser, choice["strategy"], parents, config.fusion, specialists), len(classes.fine_names),
            val_probas, val["label"], val["fold"],
        )
        choice["threshold"] = _threshold(config, paths, classes, held_out, val["label"])
    test_probas = view_probas(config, paths, "test_proba") | {name: b.test_proba for name, b in served.items()}
    return choice, fuser.predict_proba(test_probas)


def _fuse_values(config: Config, paths: ProjectPaths, classes: Taxonomy, served: dict) -> tuple[dict, np.ndarray]:
    """A regression target's views (and its served baseline) stacked into one value
    (granular/core/value_fusion.py); its test values, (N, 1)."""
    train = split_rows(paths, "train")
    train_values = split_values(paths, "train")
    bin_means = {}  # a view of a binned level: the training rows' mean value in each bin
    for view in config.views.values():
        if not config.learns_value(view):
            bins = classes.map_labels(train["label"], view.level)
            bin_means[view.name] = [float(train_values[bins == k].mean()) for k in range(classes.num_classes(view.level))]
    val = split_rows(paths, "val")
    outputs = {
        split: view_probas(config, paths, f"{split}_proba") | {name: getattr(b, f"{split}_proba") for name, b in served.items()}
        for split in ("val", "test")
    }
    record = value_fusion.choose(
        config.fusion.strategy, value_fusion.input_values(outputs["val"], bin_means), split_values(paths, "val"), val["fold"],
    )
    record |= {
        "task": "regression", "bins": config.data.table.bins,
        "bin_means": {name: bin_means[name] for name in record["weights"] if name in bin_means},
    }
    test_values = value_fusion.predict(record, value_fusion.input_values(outputs["test"], bin_means))
    return record, test_values[:, None]


def _threshold(config: Config, paths: ProjectPaths, classes: Taxonomy, held_out: np.ndarray, y: np.ndarray) -> dict:
    """The decision threshold of a target of two classes (fusion.threshold_metric), on the fused
    model's out-of-fold validation probabilities; its positive class is fusion.positive_class,
    or the rarer one in training."""
    names = list(classes.fine_names)
    if len(names) != 2:
        raise ValueError(f"fusion.threshold_metric: a decision threshold is for a target of two classes; this one has {len(names)}")
    positive = config.fusion.positive_class
    if positive is None:
        positive = names[int(np.argmin(np.bincount(split_rows(paths, "train")["label"], minlength=2)))]
    elif positive not in names:
        raise ValueError(f"fusion.positive_class: {positive!r} is not a class of the target {names}")
    index = names.index(positive)
    return {"positive": positive, "positive_index": index, **choose_threshold(held_out[:, index], y == index, config.fusion.threshold_metric)}
