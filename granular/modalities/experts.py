"""A view's networks, for images and tables alike: one network, or one expert per segment of the
examples, each example answered by the network its segment is routed to.

The one expert loop (`fit_experts`) trains network k on the examples routed to k; with a
fallback, network 0 is a global network trained on every example, answering those no expert
takes (a table's rare segment values). A "network" is whatever the view's learner fits: a
neural network (granular/nn/trained.py) or a table's boosted trees
(granular/modalities/tables/trees.py); each names its `learner`, knows its `num_classes` and
saves itself to one file. A `ViewModel` is the trained networks with the modality's
`ViewReader`, which turns raw inputs into network inputs and routes each one; on disk it is a
folder: view.json, network-K.pt (or .joblib), and the reader's own files.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

if TYPE_CHECKING:  # torch loads only where a network runs
    from granular.nn.device import Runtime
    from granular.nn.inputs import NetworkInputs

VIEW_FILE = "view.json"


# A view's networks are saved one file each, as their learner writes them.
NETWORK_SUFFIXES = {"network": ".pt", "hgb": ".joblib"}


def network_file(number: int, learner: str = "network") -> str:
    return f"network-{number}{NETWORK_SUFFIXES[learner]}"


@dataclass(frozen=True)
class ExpertPlan:
    """Which network answers each example of each split, and what each network's records are
    tagged with ({} for a view of one network). With `fallback`, network 0 trains on every
    example; any other network trains on the examples routed to it."""

    route: dict[str, np.ndarray]  # split -> (N,) network number
    tags: list[dict] = field(default_factory=lambda: [{}])
    fallback: bool = False
    # split -> (N,) the examples any network may learn from (a specialist's classes); None: all
    learnable: dict[str, np.ndarray] | None = None

    def rows(self, split: str, number: int) -> np.ndarray:
        """The examples of `split` that network `number` learns from (or is validated on)."""
        if self.fallback and number == 0:
            rows = np.ones(len(self.route[split]), dtype=bool)
        else:
            rows = self.route[split] == number
        return rows & self.learnable[split] if self.learnable is not None else rows


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

    def columns_read(self) -> list[str]:
        """The named features it reads (a table's columns, its segment column too); [] for images."""

    def save(self, folder: Path) -> dict[str, Any]:
        """Write the reader's files into `folder`; return what view.json keeps of it."""

    def files(self, folder: Path) -> list[Path]: ...


# fit_network(number, tag, x_train, y_train, x_val, y_val, record_epoch) -> network `number`,
# which the plan tags with `tag` (its segment, say).
FitNetwork = Callable[[int, dict, Any, np.ndarray, Any, np.ndarray, Callable[[dict], None]], Any]


def fit_experts(
    x: dict[str, NetworkInputs], y: dict[str, np.ndarray], plan: ExpertPlan, fit_network: FitNetwork, on_epoch=None,
) -> tuple[list, list[dict], float]:
    """Train the plan's networks in turn, each on the examples routed to it; return them, the
    history of every epoch (tagged by network) and the seconds spent."""
    history, networks = [], []
    started = time.perf_counter()
    for number, tag in enumerate(plan.tags):

        def record_epoch(record: dict, tag: dict = tag) -> None:
            history.append({**tag, **record})
            if on_epoch is not None:
                on_epoch(history[-1])

        rows = {split: plan.rows(split, number) for split in ("train", "val")}
        networks.append(fit_network(
            number, tag, x["train"][rows["train"]], y["train"][rows["train"]], x["val"][rows["val"]], y["val"][rows["val"]],
            record_epoch,
        ))
    return networks, history, time.perf_counter() - started


def predict_routed(
    networks: list, route: np.ndarray, x: NetworkInputs, runtime: Runtime, shifted: bool = True, augmented: bool = True,
    first: np.ndarray | None = None,
) -> np.ndarray:
    """The outputs of each example from the network it is routed to (with its shifted test-time
    copies unless not `shifted`, with none unless `augmented`; `first`: each example's class
    probabilities of one pass, computed already, see predict_proba): class probabilities
    (float32), or a regressor's values (N, 1),
    which keep their precision (float64)."""
    from granular.nn.predict import predict_proba

    outputs = {}
    for number, network in enumerate(networks):
        rows = route == number
        if not rows.any():
            continue
        if network.learner == "network":
            known = None if first is None else first[rows]
            outputs[number] = predict_proba(network, x[rows], runtime, shifted=shifted, augmented=augmented, first=known)
        else:  # trees: on the CPU, with no test-time copies
            outputs[number] = network.outputs(x[rows])
    out = np.zeros((len(x), networks[0].num_classes), dtype=np.result_type(np.float32, *outputs.values()))
    for number, answered in outputs.items():
        out[route == number] = answered
    return out


@dataclass(frozen=True)
class ViewModel:
    level: str
    reader: ViewReader
    networks: list  # granular.nn.trained.TrainedModel, network k answering route k

    def predict(
        self, raw: Any, runtime: Runtime, shifted: bool = True, augmented: bool = True, first: np.ndarray | None = None,
    ) -> np.ndarray:
        """Raw inputs (images at full size, pixels 0..255; or a table's rows) -> its outputs: the
        probabilities of the classes of its level (N, classes), or a view of a value's values (N, 1).
        Not `augmented`: one pass over each input, without test-time copies; `first`: the class
        probabilities of that pass, computed already."""
        x = self.reader.network_inputs(raw)
        return predict_routed(
            self.networks, self.reader.route(raw), x, runtime, shifted=shifted, augmented=augmented, first=first,
        )

    def save(self, folder: Path) -> None:
        learner = self.networks[0].learner
        write_view_spec(folder, self.level, self.reader, len(self.networks), learner)
        for number, network in enumerate(self.networks):
            network.save(folder / network_file(number, learner))


def write_view_spec(folder: Path, level: str, reader: ViewReader, networks: int, learner: str = "network") -> None:
    """view.json and the reader's files: with network-0 .. network-(networks-1), a view model."""
    spec = {"modality": reader.modality, "level": level, "networks": networks, "reader": reader.save(folder)}
    if learner != "network":  # absent for networks, as in views saved before trees were a learner
        spec["learner"] = learner
    (folder / VIEW_FILE).write_text(json.dumps(spec, indent=2) + "\n")


def read_view_spec(folder: Path) -> dict[str, Any]:
    path = folder / VIEW_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no view model ({VIEW_FILE} is missing)")
    return json.loads(path.read_text())


def network_files(folder: Path, spec: dict[str, Any]) -> list[Path]:
    return [folder / network_file(n, spec.get("learner", "network")) for n in range(spec["networks"])]


def load_networks(folder: Path, spec: dict[str, Any], runtime: Runtime) -> list:
    if spec.get("learner", "network") == "hgb":
        from granular.modalities.tables.trees import load_trees

        return [load_trees(path) for path in network_files(folder, spec)]
    from granular.nn.trained import load_checkpoint

    return [load_checkpoint(path, runtime) for path in network_files(folder, spec)]
