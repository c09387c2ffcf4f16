"""Step train: one view's networks (one, or an expert per segment), its model, history and
val/test probabilities (data/models/<view>/)."""
from __future__ import annotations

import shutil

from granular.config import Config
from granular.core import plots
from granular.modalities import modality_for
from granular.modalities.base import TrainingData
from granular.modalities.experts import ViewModel, fit_experts, network_file, predict_routed
from granular.pipeline.reads import project_taxonomy
from granular.store.atomic import atomic_dir, write_json, write_npz
from granular.store.paths import ProjectPaths


def networks_in_view(config: Config, paths: ProjectPaths, view_name: str) -> int:
    """How many networks a view trains (its view files must be written)."""
    return modality_for(config).networks_in_view(config, paths, config.view(view_name))


def source_weights(paths: ProjectPaths, source: str, runtime) -> dict:
    """The weights of view `source`'s trained network, which a transfer starts from."""
    from granular.nn.trained import load_checkpoint

    checkpoint = paths.model_dir(source) / network_file(0)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"view {source} is to be trained first: its network {checkpoint} is not there")
    return {key: value.detach().clone() for key, value in load_checkpoint(checkpoint, runtime).model.state_dict().items()}


def train_step(config: Config, paths: ProjectPaths, view_name: str, on_epoch=None, warn=print, gpu: int = 0) -> dict:
    """Train one view (a transfer from its source view's trained network); each val/test example
    is predicted by the network it is routed to. A training that was killed resumes from its last
    checkpoint."""
    from granular.nn.device import select_runtime  # torch is imported only by the steps that need it

    view = config.view(view_name)
    classes = project_taxonomy(config, paths)
    train_config = config.train_config(view)
    runtime = select_runtime(train_config.threads, gpu, train_config.precision)
    data = modality_for(config).training_data(config, paths, view, classes, warn)
    initial = source_weights(paths, view.start_from, runtime) if view.start_from else None
    networks, history, seconds = fit_experts(
        data.x, data.y, data.plan, view, classes, train_config, runtime, paths.checkpoints(view.name),
        on_epoch=on_epoch, warn=warn, initial=initial,
        initial_level=config.view(view.start_from).level if view.start_from else None,
    )
    summary = save_view(paths, view, data, networks, history, runtime)
    shutil.rmtree(paths.checkpoints(view.name), ignore_errors=True)  # the model is saved: not needed
    return {**summary, "train_seconds": seconds}


def save_view(paths: ProjectPaths, view, data: TrainingData, networks: list, history: list[dict], runtime) -> dict:
    """Write a trained view's model, its val/test probabilities (each example predicted by the
    network it is routed to), history and learning curves; return what its training summary says."""
    proba = {s: predict_routed(networks, data.plan.route[s], data.x[s], runtime) for s in ("val", "test")}
    with atomic_dir(paths.model_dir(view.name)) as staging:
        ViewModel(level=view.level, reader=data.reader, networks=networks).save(staging)
        write_npz(staging / "predictions.npz", val_proba=proba["val"], test_proba=proba["test"])
        write_json(staging / "history.json", history)
        plots.save_learning_curves_png(staging / "learning_curves.png", history, title=view.name)
    return {
        "view": view.name,
        "device": runtime.name,
        "history": history,
        "val_accuracy": float((proba["val"].argmax(1) == data.y["val"]).mean()),
    }
