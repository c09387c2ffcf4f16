"""The table pipeline on synthetic tables of growing size: wall time of each step and peak memory.

    .venv/bin/python benchmarks/tabular.py [--rows 100000 1000000 10000000] [--epochs 1] [--record]

Each size runs in its own process (so its peak resident memory is its own) on a fresh project:
the synthetic table is generated, then every step runs as `granular run` runs it, without the
Prefect and MLflow around it (benchmarks/overhead.py measures those): import, clean, validate,
split, views, training of each view, fusion (which fits the boosted-trees baseline, one of its
inputs) and evaluation. Prints one JSON object per size; with --record, also writes them into
docs/tables.md as one table, a row per figure and a column per size.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import record  # benchmarks/record.py
import yaml

REPO = Path(__file__).resolve().parents[1]
PARAMS = {
    "data": {
        "source": {"format": "parquet", "path": "data/synthetic.parquet"},
        "table": {"target": "fine", "id": "id", "ancestors": {"coarse": "coarse"},
                  "feature_groups": {"coarse": ["x0", "x1", "region"]}},
    },
    "taxonomy": None,
    "views": {
        "fine-all": {"level": "fine", "features": "all"},
        "coarse-coarse": {"level": "coarse", "features": "coarse"},
        "fine-all-region": {"level": "fine", "features": "all",
                            "segments": {"by": "column", "column": "region", "min_size": 1000}},
    },
    "train": {"batch_size": 2048, "optimizer": "adamw", "lr": 0.003, "width": 64},
    "fusion": {"strategy": "gating"},
    "distill": {"enabled": False},
}


def run_one(rows: int, epochs: int, root: Path) -> dict:
    """In this process: generate, then every step; seconds per step and peak memory."""
    from granular.config import load_config
    from granular.demo import synthetic
    from granular.pipeline.clean import clean_step
    from granular.pipeline.evaluate import evaluate_step
    from granular.pipeline.fuse import fuse_step
    from granular.pipeline.import_raw import import_raw_step
    from granular.pipeline.split import split_step
    from granular.pipeline.train import train_step
    from granular.pipeline.validate import validate_step
    from granular.pipeline.view import view_step
    from granular.store.paths import ProjectPaths

    (root / "data").mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    seconds = {}
    started = time.perf_counter()
    synthetic.generate(rows, root / "data" / "synthetic.parquet", seed=0)
    seconds["generate"] = round(time.perf_counter() - started, 2)
    paths = ProjectPaths(root)
    config = load_config(paths.params, [f"train.epochs={epochs}"])
    pipeline_started = time.perf_counter()
    plan = [("import_raw", import_raw_step), ("clean", clean_step), ("validate", validate_step),
            ("split", split_step)]
    plan += [(f"view {v}", lambda c, p, v=v: view_step(c, p, v)) for v in config.views]
    plan += [(f"train {v}", lambda c, p, v=v: train_step(c, p, v, warn=lambda _: None)) for v in config.views]
    plan += [("fuse", fuse_step), ("evaluate", evaluate_step)]
    for name, step in plan:
        started = time.perf_counter()
        result = step(config, paths)
        seconds[name] = round(time.perf_counter() - started, 2)
    metrics = result
    return {
        "rows": rows,
        "epochs": epochs,
        "pipeline_seconds": round(time.perf_counter() - pipeline_started, 1),
        "baseline_fit_seconds": round(metrics["latency"]["hgb"]["train_seconds"], 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "test_accuracy": {name: round(scores["accuracy"], 4) for name, scores in metrics["test"].items()},
        "step_seconds": seconds,
    }


def flatten(figures: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}, "c": ["x", "y"]} -> {"a.b": 1, "c": "x; y"}."""
    flat = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            flat[f"{prefix}{key}"] = "; ".join(map(str, value))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def by_figure(results: list[dict]) -> list[dict]:
    """The sizes' results as table rows: one per figure (nested ones dotted), one column per size."""
    columns = [(f"{result['rows']:,} rows", flatten(result)) for result in results]
    figures = dict.fromkeys(key for _, flat in columns for key in flat if key != "rows")
    return [{"figure": figure, **{column: flat.get(figure) for column, flat in columns}} for figure in figures]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--record", action="store_true", help="also write the figures into docs/tables.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one size, in its own process
        with tempfile.TemporaryDirectory() as scratch:
            print(json.dumps(run_one(args.rows[0], args.epochs, Path(scratch))), flush=True)
        return
    if args.record:
        record.check("tabular")
    results = []
    for rows in args.rows:
        command = [sys.executable, __file__, "--child", "--rows", str(rows), "--epochs", str(args.epochs)]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            results.append({"rows": rows, "error": done.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    if args.record:
        record.record("tabular", by_figure(results))


if __name__ == "__main__":
    main()
