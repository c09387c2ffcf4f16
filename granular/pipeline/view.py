"""Step view: one view's train/val/test files (data/processed/<view>/)."""
from __future__ import annotations

from granular.config import Config
from granular.modalities import modality_for
from granular.pipeline.reads import project_taxonomy
from granular.store.atomic import atomic_dir, write_npz
from granular.store.digest import file_digest
from granular.store.paths import ProjectPaths


def view_step(config: Config, paths: ProjectPaths, view_name: str) -> dict:
    """Write one view's files; return their content hashes and sizes."""
    view = config.view(view_name)
    hashes = {}
    with atomic_dir(paths.view_dir(view_name)) as staging:
        arrays_by_split = modality_for(config).view_arrays(config, paths, view, project_taxonomy(config, paths), staging)
        for split_name, arrays in arrays_by_split.items():
            target = staging / paths.view_split(view_name, split_name).name
            write_npz(target, **arrays)
            hashes[split_name] = {"md5": file_digest(target), "n": int(len(arrays["y"]))}
    return hashes
