"""Step import_raw: copy the source's files untouched into data/raw/, and hash them."""
from __future__ import annotations

from granular.config import Config
from granular.modalities import modality_for
from granular.store.digest import file_digest
from granular.store.paths import ProjectPaths


def import_raw_step(config: Config, paths: ProjectPaths) -> dict:
    files = modality_for(config).import_raw(config, paths)
    return {"files": {str(f.relative_to(paths.raw)): file_digest(f) for f in files}}
