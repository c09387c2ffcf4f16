"""A view's networks, for images and tables alike: one network, or one expert per segment of the
examples, each example answered by the network its segment is routed to.

The one expert loop (`fit_experts`) trains network k on the examples routed to k; with a
fallback, network 0 is a global network trained on every example, answering those no expert
takes (a table's rare segment values). A `ViewModel` is the trained networks with the
modality's `ViewReader`, which turns raw inputs into network inputs and routes each one; on disk
it is a folder: view.json, network-K.pt, and the reader's own files.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from granular.config import TrainConfig, ViewConfig
from granular.core.taxonomy import Taxonomy

if TYPE_CHECKING:  # torch loads only where a network runs
    from granular.nn.device import Runtime
    from granular.nn.inputs import NetworkInputs

VIEW_FILE = "view.json"


def network_file(number: int) -> str:
    return f"network-{number}.pt"


@dataclass(frozen=True)
class ExpertPlan:
    """Which network answers each example of each split, and what each network's records are
    tagged with ({} for a view of one network). With `fallback`, network 0 trains on every
    example; any other network trains on the examples routed to it."""

    route: dict[str, np.ndarray]  # split -> (N,) network number
    tags: list[dict] = field(default_factory=lambda: [{}])
    fallback: bool = False

    def rows(self, split: str, number: int) -> np.ndarray:
        """The examples of `split` that network `number` learns from (or is validated on)."""
        if self.fallback and number == 0:
            return np.ones(len(self.route[split]), dtype=bool)
        return self.route[split] == number


def single_network(sizes: dict[str, int]) -> ExpertPlan:
    """The plan of an unsegmented view: one network answers every example."""
    return ExpertPlan(route={split: np.zeros(n, dtype=np.int64) for split, n in sizes.items()})


class ViewReader(Protocol):
    """The modality's part of a view's model: raw inputs (images at full size, a table's rows)
    in, network inputs and the network of each example out."""

    modality: str

    def network_inputs(self, raw: Any) -> NetworkInputs: ...

    def route(self, raw: Any) -> np.ndarray:
        """(N,) the network that answers each raw example."""

    def save(self, folder: Path) -> dict[str, Any]:
        """Write the reader's files into `folder`; return what view.json keeps of it."""

    def files(self, folder: Path) -> list[Path]: ...


def fit_experts(
    x: dict[str, NetworkInputs], y: dict[str, np.ndarray], plan: ExpertPlan, view: ViewConfig, taxonomy: Taxonomy,
    config: TrainConfig, runtime: Runtime, checkpoint_dir: Path, on_epoch=None, warn: Callable[[str], None] = print,
    initial: dict | None = None, initial_level: str | None = None,
) -> tuple[list, list[dict], float]:
    """Train the plan's networks in turn (network k with seed train.seed + k), each from the
    weights `initial` of a network that learned `initial_level` where given; return them, the
    history of every epoch (tagged by network) and the seconds spent."""
    from granular.nn import stages  # torch is imported only where a network trains

    history, networks = [], []
    started = time.perf_counter()
    for number, tag in enumerate(plan.tags):

        def record_epoch(record: dict, tag: dict = tag) -> None:
            history.append({**tag, **record})
            if on_epoch is not None:
                on_epoch(history[-1])

        network_config = config.model_copy(update={"seed": config.seed + number})
        rows = {split: plan.rows(split, number) for split in ("train", "val")}
        network = stages.fit_staged(
            x["train"][rows["train"]], y["train"][rows["train"]], x["val"][rows["val"]], y["val"][rows["val"]],
            taxonomy, view.level, network_config, runtime,
            on_epoch=record_epoch, checkpoint_dir=checkpoint_dir / f"network-{number}", warn=warn,
            initial=initial, initial_level=initial_level,
        )
        network.meta = {
            "view": view.model_dump(), "train_config": network_config.model_dump(),
            "class_names": list(taxonomy.names[view.level]), **tag,
        }
        networks.append(network)
    return networks, history, time.perf_counter() - started


def predict_routed(
    networks: list, route: np.ndarray, x: NetworkInputs, runtime: Runtime, shifted: bool = True
) -> np.ndarray:
    """Probabilities of each example from the network it is routed to (with its shifted
    test-time copies unless not `shifted`)."""
    from granular.nn.train import predict_proba

    out = np.zeros((len(x), networks[0].model.config.num_classes), dtype=np.float32)
    for number, network in enumerate(networks):
        rows = route == number
        if rows.any():
            out[rows] = predict_proba(network, x[rows], runtime, shifted=shifted)
    return out


@dataclass(frozen=True)
class ViewModel:
    level: str
    reader: ViewReader
    networks: list  # granular.nn.trained.TrainedModel, network k answering route k

    def predict_proba(self, raw: Any, runtime: Runtime, shifted: bool = True) -> np.ndarray:
        """Raw inputs (images at full size, pixels 0..255; or a table's rows) -> (N, classes of its level)."""
        x = self.reader.network_inputs(raw)
        return predict_routed(self.networks, self.reader.route(raw), x, runtime, shifted=shifted)

    def save(self, folder: Path) -> None:
        from granular.nn.trained import save_checkpoint

        write_view_spec(folder, self.level, self.reader, len(self.networks))
        for number, network in enumerate(self.networks):
            save_checkpoint(folder / network_file(number), network)


def write_view_spec(folder: Path, level: str, reader: ViewReader, networks: int) -> None:
    """view.json and the reader's files: with network-0.pt .. network-(networks-1).pt, a view model."""
    spec = {"modality": reader.modality, "level": level, "networks": networks, "reader": reader.save(folder)}
    (folder / VIEW_FILE).write_text(json.dumps(spec, indent=2) + "\n")


def read_view_spec(folder: Path) -> dict[str, Any]:
    path = folder / VIEW_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no view model ({VIEW_FILE} is missing)")
    return json.loads(path.read_text())


def load_networks(folder: Path, spec: dict[str, Any], runtime: Runtime) -> list:
    from granular.nn.trained import load_checkpoint

    return [load_checkpoint(folder / network_file(n), runtime) for n in range(spec["networks"])]
