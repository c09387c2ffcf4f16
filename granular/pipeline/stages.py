"""Command-line entry of the DVC stages: `python -m granular.pipeline.stages STEP [--view NAME | --pair NAME]`.

Each stage reads params.yaml and calls the same step function the Prefect flow calls. Only the
step's own module is imported, so a stage runs exactly the code dvc.yaml lists for it.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from granular.config import load_config
from granular.store.paths import ProjectPaths

# Each DVC stage (dvc.yaml) and the module of granular/pipeline/ whose `<module>_step` it runs.
STEPS = {
    "import-raw": "import_raw", "clean": "clean", "validate": "validate", "split": "split", "view": "view",
    "train": "train", "cotrain": "cotrain", "fuse": "fuse", "distill": "distill", "cascade": "cascade",
    "evaluate": "evaluate",
}

VIEW_STEPS = ("view", "train")  # the steps that work on one view


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m granular.pipeline.stages", description=__doc__)
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("--view", help="the view to build or train (view and train only)")
    parser.add_argument("--pair", help="the pair of co-trained views to train (cotrain only)")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project root (default: here)")
    args = parser.parse_args(argv)
    paths = ProjectPaths(args.root.resolve())
    config = load_config(paths.params)
    kwargs = {}
    if args.step in VIEW_STEPS:
        if not args.view:
            parser.error(f"{args.step} needs --view")
        kwargs["view_name"] = args.view
    if args.step == "cotrain":
        if not args.pair:
            parser.error("cotrain needs --pair")
        kwargs["pair_name"] = args.pair
    if args.step in ("train", "cotrain", "distill"):  # the steps that train: one line per epoch
        kwargs["on_epoch"] = lambda record: print(json.dumps(record), flush=True)
    module = STEPS[args.step]
    step = getattr(importlib.import_module(f"granular.pipeline.{module}"), f"{module}_step")
    summary = step(config, paths, **kwargs)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
