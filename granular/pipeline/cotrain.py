"""Step cotrain: one `cotrain` pair, its two views trained side by side (deep mutual learning,
granular/nn/cotrain.py), each saved as the train step saves a view (data/models/<view>/)."""
from __future__ import annotations

import time

from granular.config import Config
from granular.core.class_weights import class_weights
from granular.modalities import modality_for
from granular.pipeline.reads import project_taxonomy
from granular.pipeline.train import save_view
from granular.store.paths import ProjectPaths


def cotrain_step(config: Config, paths: ProjectPaths, pair_name: str, on_epoch=None, warn=print, gpu: int = 0) -> dict:
    """Train the pair's views together; return each one's training summary by its name. Each
    epoch's record names its view (`view`). A killed pair trains again from the start: the two
    networks pause at different steps, so there is no common point to resume from."""
    from granular.nn.cotrain import Member, fit_together  # torch is imported only by the steps that need it
    from granular.nn.device import select_runtime

    pair = config.cotrain[pair_name]
    views = [config.view(pair.first), config.view(pair.second)]
    classes = project_taxonomy(config, paths)
    settings = [config.train_config(view) for view in views]
    runtime = select_runtime(settings[0].threads, gpu, settings[0].precision)
    data = [modality_for(config).training_data(config, paths, view, classes, warn) for view in views]
    histories: list[list[dict]] = [[], []]

    def recorder(number: int):
        def record(epoch: dict) -> None:
            histories[number].append(epoch)
            if on_epoch is not None:
                on_epoch({**epoch, "view": views[number].name})
        return record

    members = [
        Member(
            x_train=d.x["train"], y_train=d.y["train"], x_val=d.x["val"], y_val=d.y["val"],
            num_classes=classes.num_classes(view.level), config=train_config, on_epoch=recorder(number),
            class_weights=class_weights(train_config.class_weight, d.y["train"], classes, view.level),
        )
        for number, (view, train_config, d) in enumerate(zip(views, settings, data))
    ]
    started = time.perf_counter()
    networks = fit_together(members, pair.weight, runtime, warn)
    seconds = time.perf_counter() - started
    summaries = {}
    for view, train_config, d, network, history in zip(views, settings, data, networks, histories):
        network.meta = {
            "view": view.model_dump(), "train_config": train_config.model_dump(),
            "class_names": list(classes.names[view.level]), "cotrain": {"pair": pair_name, **pair.model_dump()},
        }
        summaries[view.name] = {**save_view(paths, view, d, [network], history, runtime), "train_seconds": seconds}
    return {"pair": pair_name, "weight": pair.weight, "views": summaries}
