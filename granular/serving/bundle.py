"""A bundle: the files of a fused model, as the fuse step writes them to data/fused/ (and the
distill step to data/student/). The taxonomy, the fusion record, what the model reads, and every
view's model, so the bundle alone rebuilds the whole model (granular/serving/predict.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from granular.modalities import view_model_files
from granular.modalities.base import InputSpec

TAXONOMY_FILE = "taxonomy.yaml"
FUSION_FILE = "fusion.json"
INPUT_FILE = "input.json"
VIEWS_DIR = "views"


def write_bundle(
    folder: Path, taxonomy_file: Path, fusion_record: dict, model_dirs: dict[str, Path], input_spec: InputSpec
) -> None:
    shutil.copy(taxonomy_file, folder / TAXONOMY_FILE)
    (folder / FUSION_FILE).write_text(json.dumps(fusion_record, indent=2, sort_keys=True) + "\n")
    (folder / INPUT_FILE).write_text(json.dumps(input_spec.to_json()) + "\n")
    for view, model_dir in model_dirs.items():
        (folder / VIEWS_DIR / view).mkdir(parents=True)
        for file in view_model_files(model_dir):
            shutil.copy(file, folder / VIEWS_DIR / view / file.name)
