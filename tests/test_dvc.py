"""dvc.yaml is real: `dvc repro` runs the same steps on a small copy of the project."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_dvc_repro_builds_every_stage_then_has_nothing_to_do(tmp_path: Path):
    for item in ("dvc.yaml", "granular"):
        (shutil.copytree if (REPO / item).is_dir() else shutil.copy)(REPO / item, tmp_path / item)
    (tmp_path / "data").mkdir()
    shutil.copy(REPO / "data" / "taxonomy.yaml", tmp_path / "data" / "taxonomy.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["limit"] = 400
    params["validate"]["min_per_class"] = 10
    params["train"].update(epochs=1, width=8)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _run(["git", "init", "-q"], tmp_path)
    _run([sys.executable, "-m", "dvc", "init", "-q"], tmp_path)

    _run([sys.executable, "-m", "dvc", "repro"], tmp_path)

    metrics = json.loads((tmp_path / "data/evaluation/metrics.json").read_text())
    assert set(metrics["test"]) == {"fine-28", "fine-14", "coarse-28", "fused"}
    assert "up to date" in _run([sys.executable, "-m", "dvc", "status"], tmp_path)
    assert "fused" in _run([sys.executable, "-m", "dvc", "metrics", "show"], tmp_path)
    plots = json.loads(_run([sys.executable, "-m", "dvc", "plots", "show", "--json"], tmp_path))
    assert {"fused_confusion", "test_accuracy_by_model"} <= set(plots["data"])

    # A training parameter invalidates the training stages and what follows, not the data stages.
    params["train"]["lr"] = 0.02
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    changed = _run([sys.executable, "-m", "dvc", "status", "--json"], tmp_path)
    assert set(json.loads(changed)) == {"train@0", "train@1", "train@2"}
