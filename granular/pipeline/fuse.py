"""Step fuse: fit the fusion of the views on validation predictions; write the fused model as a
bundle (data/fused/) and its test predictions."""
from __future__ import annotations

from granular.config import Config
from granular.core import fusion
from granular.modalities import modality_for
from granular.pipeline.reads import project_taxonomy, split_rows, view_probas
from granular.serving.bundle import write_bundle
from granular.store.atomic import atomic_dir, write_npz
from granular.store.paths import ProjectPaths


def fuse_step(config: Config, paths: ProjectPaths) -> dict:
    classes = project_taxonomy(config, paths)
    parents = {v.name: classes.parent[v.level] for v in config.views.values()}
    val = split_rows(paths, "val")
    fuser, choice = fusion.choose_fusion(
        config.fusion, parents, view_probas(config, paths, "val_proba"), val["label"], folds=val["fold"]
    )
    test_proba = fuser.predict_proba(view_probas(config, paths, "test_proba"))
    with atomic_dir(paths.fused_dir) as staging:
        write_bundle(
            staging, paths.taxonomy(config.taxonomy), choice, {name: paths.model_dir(name) for name in config.views},
            modality_for(config).input_spec(config, paths),
        )
        write_npz(staging / "predictions.npz", test_proba=test_proba)
    return choice
