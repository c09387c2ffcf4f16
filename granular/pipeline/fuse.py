"""Step fuse: fit the fusion of the views on validation outputs, as the problem fuses them
(granular/problems/: class probabilities, or a regression target's values stacked); write the
fused model as a bundle (data/fused/) and its test outputs. The modality's baselines are fitted
here too (data/baselines/): one that can serve, a table's boosted trees, is one more input of the
fusion, so the fused model has it to fall back on."""
from __future__ import annotations

from granular.config import Config
from granular.modalities import modality_for
from granular.pipeline.reads import ProjectReads, project_taxonomy
from granular.problems import problem_for
from granular.serving.bundle import VIEWS_DIR, write_bundle
from granular.store.atomic import atomic_dir, write_json, write_npz
from granular.store.paths import ProjectPaths

BASELINE_PREDICTIONS = "predictions.npz"  # in data/baselines/: each baseline's test outputs
BASELINE_FIGURES = "figures.json"  # ... and its figures of this machine (training seconds)


def fuse_step(config: Config, paths: ProjectPaths) -> dict:
    modality = modality_for(config)
    classes = project_taxonomy(config, paths)
    baselines = modality.baselines(config, paths)
    served = {name: baseline for name, baseline in baselines.items() if baseline.model is not None}
    served_outputs = {
        "fusion": {name: b.fusion_outputs for name, b in served.items()}, "test": {name: b.test_outputs for name, b in served.items()},
    }
    choice, outputs = problem_for(config).fuse(config, classes, ProjectReads(config, paths), served_outputs)
    with atomic_dir(paths.fused_dir) as staging:
        write_bundle(
            staging, paths.taxonomy(config.taxonomy), choice, {name: paths.model_dir(name) for name in config.views},
            modality.input_spec(config, paths),
        )
        for name, baseline in served.items():
            (staging / VIEWS_DIR / name).mkdir(parents=True)
            baseline.model.save(staging / VIEWS_DIR / name)
        write_npz(staging / "predictions.npz", **outputs)
    with atomic_dir(paths.baselines_dir) as staging:
        write_npz(staging / BASELINE_PREDICTIONS, **{name: b.test_outputs for name, b in baselines.items()})
        write_json(staging / BASELINE_FIGURES, {name: b.figures for name, b in baselines.items()})
    return choice
