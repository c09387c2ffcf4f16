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
    "evaluate": steps.evaluate_step,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m granular.stages", description=__doc__)
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("--view", help="the view to build or train (view and train only)")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project root (default: here)")
    args = parser.parse_args(argv)
    paths = ProjectPaths(args.root.resolve())
    config = load_config(paths.params)
    if args.step in ("view", "train") and not args.view:
        parser.error(f"{args.step} needs --view")
    if args.step == "train":
        summary = steps.train_step(config, paths, args.view, on_epoch=lambda r: print(json.dumps(r), flush=True))
    elif args.step == "view":
        summary = steps.view_step(config, paths, args.view)
    else:
        summary = STEPS[args.step](config, paths)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
