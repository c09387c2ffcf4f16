"""Command-line entry of the DVC stages: `python -m granular.stages STEP [--view NAME]`.

Each stage reads params.yaml and calls the same step function the Prefect flow calls.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from granular import steps
from granular.config import load_config
from granular.paths import ProjectPaths

STEPS = {
    "import-raw": steps.import_raw_step,
    "clean": steps.clean_step,
    "validate": steps.validate_step,
    "split": steps.split_step,
    "view": steps.view_step,
    "train": steps.train_step,
    "fuse": steps.fuse_step,
    "distill": steps.distill_step,
    "evaluate": steps.evaluate_step,
}

VIEW_STEPS = ("view", "train")  # the steps that work on one view


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m granular.stages", description=__doc__)
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("--view", help="the view to build or train (view and train only)")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project root (default: here)")
    args = parser.parse_args(argv)
    paths = ProjectPaths(args.root.resolve())
    config = load_config(paths.params)
    kwargs = {}
    if args.step in VIEW_STEPS:
        if not args.view:
            parser.error(f"{args.step} needs --view")
        kwargs["view_name"] = args.view
    if args.step in ("train", "distill"):  # the steps that train: one line per epoch
        kwargs["on_epoch"] = lambda record: print(json.dumps(record), flush=True)
    summary = STEPS[args.step](config, paths, **kwargs)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
