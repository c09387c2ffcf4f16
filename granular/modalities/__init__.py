"""The one place that picks the modality: from the configuration (what data.source holds), or
from what a saved model or bundle says it reads. Everything else calls the `Modality` protocol
(granular/modalities/base.py) without asking which one it has."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from granular.config import Config
from granular.modalities.base import InputSpec, Modality
from granular.modalities.experts import VIEW_FILE, ViewModel, load_networks, network_files, read_view_spec

if TYPE_CHECKING:
    from granular.nn.device import Runtime


def modality_named(name: str) -> Modality:
    # Imported on demand: a run over images never loads the table readers, nor the reverse.
    if name == "images":
        from granular.modalities.images.modality import IMAGES

        return IMAGES
    if name == "tables":
        from granular.modalities.tables.modality import TABLES

        return TABLES
    raise ValueError(f"unknown modality {name!r}; known: images, tables")


def modality_for(config: Config) -> Modality:
    return modality_named(config.data.modality)


def load_view_model(folder: Path, runtime: Runtime) -> ViewModel:
    """A view's model as the train step saved it (also inside a bundle)."""
    spec = read_view_spec(folder)
    reader = modality_named(spec["modality"]).load_reader(folder, spec["reader"])
    return ViewModel(level=spec["level"], reader=reader, networks=load_networks(folder, spec, runtime))


def view_model_files(folder: Path) -> list[Path]:
    """The files that make up the view model saved in `folder` (what a bundle copies)."""
    spec = read_view_spec(folder)
    reader = modality_named(spec["modality"]).load_reader(folder, spec["reader"])
    return [folder / VIEW_FILE, *reader.files(folder), *network_files(folder, spec)]


def load_input_spec(spec: dict) -> InputSpec:
    """What a bundle's model reads, from its input.json."""
    return modality_named(spec["modality"]).load_input_spec(spec)
