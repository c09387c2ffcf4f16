"""Training speed of the fine-28 view on this machine, printed as JSON.

    .venv/bin/python benchmarks/train.py                 # the view as params.yaml trains it
    .venv/bin/python benchmarks/train.py --epochs 2 --limit 10000   # a quick look
    .venv/bin/python benchmarks/train.py --record        # and rewrite its section of docs/measurements.md

Prints the device, images per second, seconds per epoch and the time-to-accuracy: seconds of
training (evaluation excluded) until the validation accuracy first reaches each target, or
null when the run ended below it. Data is the real Fashion-MNIST, cleaned and split as the
pipeline does; nothing is written.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import record  # noqa: E402  (benchmarks/record.py)

from granular.config import load_config  # noqa: E402
from granular.core import partition  # noqa: E402
from granular.core.taxonomy import load_taxonomy  # noqa: E402
from granular.modalities.images.clean import clean, subsample  # noqa: E402
from granular.modalities.images.sources import load_raw  # noqa: E402
from granular.nn.device import select_runtime  # noqa: E402
from granular.nn.train import fit  # noqa: E402

TARGETS = (0.92, 0.94)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--view", default="fine-28")
    parser.add_argument("--epochs", type=int, help="override the view's epochs")
    parser.add_argument("--limit", type=int, help="at most this many examples per official split")
    parser.add_argument("--record", action="store_true", help="also write the figures into docs/measurements.md")
    args = parser.parse_args()
    if args.record:
        record.check("train")

    config = load_config(REPO / "params.yaml")
    view = config.view(args.view)
    train_config = config.train_config(view)
    if args.epochs:
        train_config = train_config.model_copy(update={"epochs": args.epochs})
    taxonomy = load_taxonomy(REPO / config.taxonomy)
    raw = load_raw(config.data.source.format, config.data.source.path, list(taxonomy.fine_names))
    data = clean(subsample(raw, args.limit, 0), len(taxonomy.fine_names), config.clean.max_pixel).kept
    split = partition.assign_splits(data.labels, data.origin, config.split.val_fraction, config.split.seed)
    arrays = partition.build_view(data, split, taxonomy, view)
    runtime = select_runtime(train_config.threads)

    history = []
    fit(
        arrays["train"]["x"], arrays["train"]["y"], arrays["val"]["x"], arrays["val"]["y"],
        num_classes=taxonomy.num_classes(view.level), config=train_config, runtime=runtime,
        on_epoch=history.append,
    )
    elapsed, reached = 0.0, {}
    for epoch in history:
        elapsed += epoch["seconds"]
        for target in TARGETS:
            if epoch["val_accuracy"] >= target:
                reached.setdefault(target, elapsed)
    figures = {
        "device": runtime.name,
        "view": view.name,
        "train_examples": int(len(arrays["train"]["y"])),
        "epochs": train_config.epochs,
        "batch_size": train_config.batch_size,
        "images_per_s": statistics.median(r["images_per_s"] for r in history),
        "seconds_per_epoch": statistics.median(r["seconds"] for r in history),
        "final_val_accuracy": history[-1]["val_accuracy"],
        "seconds_to_val_accuracy": {f"{t:.2f}": reached.get(t) for t in TARGETS},
    }
    print(json.dumps(figures, indent=2))
    if args.record:
        record.record("train", figures)


if __name__ == "__main__":
    main()
