"""Step clean: keep the valid examples in data/interim/clean.npz, set every rejected one aside
with its reason in data/quarantine/, and count them by reason."""
from __future__ import annotations

from granular.config import Config
from granular.modalities import modality_for
from granular.store.paths import ProjectPaths


def clean_step(config: Config, paths: ProjectPaths) -> dict:
    return modality_for(config).clean(config, paths)
