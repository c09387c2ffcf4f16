"""The evaluate step on a wide table: 252 rows x 754 numeric columns, two classes, one network
view (`fine-all`) beside the automatic boosted-trees baseline; the evaluate step's permutation
importance reads every column of each model.

    .venv/bin/python benchmarks/wide_table.py [--root DIR] [--evaluate-only] [--set KEY=VALUE ...]

Generates the table, runs every step in this process as `granular run` runs them (without the
Prefect and MLflow around them) and prints the seconds of each step as JSON. --root keeps the
project in DIR (default: a temporary folder, removed); --evaluate-only runs the evaluate step
alone on a project built before, so that two versions of the step are timed on the same models.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROWS, COLUMNS, INFORMATIVE = 252, 754, 8
PARAMS = {
    "data": {"source": {"format": "csv", "path": "data/wide.csv"}, "table": {"target": "label"}},
    "taxonomy": None,
    "views": {"fine-all": {"level": "fine", "features": "all"}},
    "train": {"epochs": 30, "batch_size": 64, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.0001, "width": 64},
    "distill": {"enabled": False},
}


def wide_table(rows: int = ROWS, columns: int = COLUMNS, informative: int = INFORMATIVE, seed: int = 0) -> pd.DataFrame:
    """`columns` numeric columns of standard normal noise; the label (`yes` / `no`) is the sign of
    the first `informative` columns' sum plus noise, so a few columns matter and the rest do not."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, columns))
    score = x[:, :informative].sum(axis=1) + rng.normal(scale=1.0, size=rows)
    frame = pd.DataFrame(x, columns=[f"f{k:03d}" for k in range(columns)])
    frame["label"] = np.where(score > 0, "yes", "no")
    return frame


def steps(config, evaluate_only: bool) -> list:
    from granular.pipeline.clean import clean_step
    from granular.pipeline.evaluate import evaluate_step
    from granular.pipeline.fuse import fuse_step
    from granular.pipeline.import_raw import import_raw_step
    from granular.pipeline.split import split_step
    from granular.pipeline.train import train_step
    from granular.pipeline.validate import validate_step
    from granular.pipeline.view import view_step

    if evaluate_only:
        return [("evaluate", evaluate_step)]
    plan = [("import_raw", import_raw_step), ("clean", clean_step), ("validate", validate_step), ("split", split_step)]
    plan += [(f"view {v}", lambda c, p, v=v: view_step(c, p, v)) for v in config.views]
    plan += [(f"train {v}", lambda c, p, v=v: train_step(c, p, v, warn=lambda _: None)) for v in config.views]
    return plan + [("fuse", fuse_step), ("evaluate", evaluate_step)]


def run(root: Path, evaluate_only: bool, overrides: list[str]) -> dict:
    from granular.config import load_config
    from granular.store.paths import ProjectPaths

    if not evaluate_only:
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
        wide_table().to_csv(root / "data" / "wide.csv", index=False)
    paths = ProjectPaths(root)
    config = load_config(paths.params, overrides)
    seconds = {}
    for name, step in steps(config, evaluate_only):
        started = time.perf_counter()
        step(config, paths)
        seconds[name] = round(time.perf_counter() - started, 1)
    return {"rows": ROWS, "columns": COLUMNS, "step_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="the project's folder, kept (default: a temporary one)")
    parser.add_argument("--evaluate-only", action="store_true", help="the evaluate step alone, on a project built before")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting of params.yaml")
    args = parser.parse_args()
    if args.evaluate_only and args.root is None:
        parser.error("--evaluate-only needs --root")
    if args.root is not None:
        print(json.dumps(run(args.root.resolve(), args.evaluate_only, args.set)), flush=True)
        return
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(run(Path(folder), False, args.set)), flush=True)


if __name__ == "__main__":
    main()
