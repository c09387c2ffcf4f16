"""Step fuse: fit the fusion of the views on validation predictions; write the fused model as a
bundle (data/fused/) and its test predictions. The modality's baselines are fitted here too
(data/baselines/): one that can serve, a table's boosted trees, is one more input of the fusion,
so the fused model has it to fall back on."""
from __future__ import annotations

from functools import partial

import numpy as np

from granular.config import Config
from granular.core import fusion
from granular.core.taxonomy import Taxonomy
from granular.core.threshold import choose_threshold
from granular.modalities import modality_for
from granular.pipeline.reads import project_taxonomy, split_rows, view_probas
from granular.serving.bundle import VIEWS_DIR, write_bundle
from granular.store.atomic import atomic_dir, write_json, write_npz
from granular.store.paths import ProjectPaths

BASELINE_PREDICTIONS = "predictions.npz"  # in data/baselines/: each baseline's test probabilities
BASELINE_FIGURES = "figures.json"  # ... and its figures of this machine (fit seconds)


def fuse_step(config: Config, paths: ProjectPaths) -> dict:
    modality = modality_for(config)
    classes = project_taxonomy(config, paths)
    baselines = modality.baselines(config, paths)
    served = {name: baseline for name, baseline in baselines.items() if baseline.model is not None}
    parents = {v.name: classes.parent[v.level] for v in config.views.values()}
    parents |= {name: classes.parent[classes.fine] for name in served}
    val = split_rows(paths, "val")
    val_probas = view_probas(config, paths, "val_proba") | {name: b.val_proba for name, b in served.items()}
    fuser, choice = fusion.choose_fusion(config.fusion, parents, val_probas, val["label"], folds=val["fold"])
    if config.fusion.threshold_metric:
        held_out = fusion.held_out_proba(
            partial(fusion.build_fuser, choice["strategy"], parents, config.fusion), len(classes.fine_names), val_probas,
            val["label"], val["fold"],
        )
        choice["threshold"] = _threshold(config, paths, classes, held_out, val["label"])
    test_probas = view_probas(config, paths, "test_proba") | {name: b.test_proba for name, b in served.items()}
    test_proba = fuser.predict_proba(test_probas)
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
