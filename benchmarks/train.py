"""Training speed and accuracy of one view on this machine, printed as JSON.

    .venv/bin/python benchmarks/train.py                      # the fine-28 view as params.yaml trains it
    .venv/bin/python benchmarks/train.py --set views.fine-28.train.epochs=2 --limit 10000   # a quick look
    .venv/bin/python benchmarks/train.py --compare train.precision=fp32 train.precision=bf16
    .venv/bin/python benchmarks/train.py --compare view=fine-28 view=fine-28-tops-Dress --set train.lr=0.1
    .venv/bin/python benchmarks/train.py --record             # and rewrite its section of docs/results.md
    .venv/bin/python benchmarks/train.py --compare views.fine-28.train.epochs=3 views.fine-28.train.epochs=14 --record train-budget

Each setting (params.yaml with --set, then one --compare item's overrides; `;` joins several
in one item; `view=NAME` in an item trains that view instead of --view) is trained once in
full; the printout gives its device and precision, images per second, seconds per epoch, the
seconds of training (evaluation excluded) until the validation accuracy first reached 92, 93
and 94% (null: never), and the final test accuracy with its 95% bootstrap interval. With
--compare, images per second are also measured side by side: one-epoch trainings on a subset,
the settings taking turns, so the ratio between settings holds on a shared machine.
Data is the real Fashion-MNIST, cleaned and split as the pipeline does; nothing is written.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import record  # noqa: E402  (benchmarks/record.py)

from granular.config import load_config  # noqa: E402
from granular.core import evaluate, partition  # noqa: E402
from granular.core.taxonomy import Taxonomy, load_taxonomy  # noqa: E402
from granular.modalities.images.clean import clean, subsample  # noqa: E402
from granular.modalities.images.fit import image_fit  # noqa: E402
from granular.modalities.images.sources import load_raw  # noqa: E402
from granular.modalities.images.views import build_view, seen  # noqa: E402
from granular.nn.device import select_runtime  # noqa: E402
from granular.nn.inputs import Pixels  # noqa: E402
from granular.nn.stages import fit_staged, level_heads_for  # noqa: E402
from granular.nn.predict import predict_proba  # noqa: E402
from granular.nn.train import fit  # noqa: E402

TARGETS = (0.92, 0.93, 0.94)


def load_arrays(config, view, limit: int | None) -> tuple[dict, Taxonomy, str]:
    """The view's train/val/test arrays (x: the images as it sees them), the taxonomy and the view's level."""
    taxonomy = load_taxonomy(REPO / config.taxonomy)
    raw = load_raw(config.data.source.format, config.data.source.path, list(taxonomy.fine_names), image_fit(config))
    data = clean(subsample(raw, limit, 0), len(taxonomy.fine_names), config.clean.max_pixel).kept
    split = partition.assign_splits(data.labels, data.origin, config.split.val_fraction, config.split.seed)
    arrays = build_view(data, split, taxonomy, view)
    for split_arrays in arrays.values():  # the images as the view sees them, in memory
        split_arrays["x"] = seen(data.images[split_arrays["rows"]], view.color, view.resolution)
    return arrays, taxonomy, view.level


def train_once(train_config, arrays: dict, taxonomy: Taxonomy, level: str) -> dict:
    """One full training (every stage of it); its speed, time to each target and test accuracy."""
    runtime = select_runtime(train_config.threads, precision=train_config.precision)
    history = []
    trained = fit_staged(
        Pixels(arrays["train"]["x"]), arrays["train"]["y"], Pixels(arrays["val"]["x"]), arrays["val"]["y"],
        taxonomy, level, train_config, runtime, on_epoch=history.append,
    )
    elapsed, reached = 0.0, {}
    for epoch in history:
        elapsed += epoch["seconds"]
        if epoch.get("stage", 0) < len(train_config.stages):
            continue  # an earlier stage's accuracy is on its own (coarser) labels
        for target in TARGETS:
            if epoch["val_accuracy"] >= target:
                reached.setdefault(target, round(elapsed, 1))
    test_y = arrays["test"]["y"]
    correct = (predict_proba(trained, Pixels(arrays["test"]["x"]), runtime).argmax(1) == test_y).astype(np.float32)
    # The same bootstrap interval as the pipeline's test table.
    low, high = evaluate.percentile_interval(evaluate.resampled_means(evaluate.resample_counts(len(test_y)), correct))
    return {
        "device": runtime.name,
        "epochs": train_config.total_epochs,
        "batch_size": train_config.batch_size,
        "images_per_s": round(statistics.median(r["images_per_s"] for r in history)),
        "seconds_per_epoch": round(statistics.median(r["seconds"] for r in history), 1),
        "training_seconds": round(elapsed, 1),
        **{f"seconds_to_{t:.2f}": reached.get(t) for t in TARGETS},
        "final_val_accuracy": round(history[-1]["val_accuracy"], 4),
        "test_accuracy": round(float(correct.mean()), 4),
        "test_95_low": round(low, 4),
        "test_95_high": round(high, 4),
    }


def side_by_side_throughput(settings: list[tuple], images: int, rounds: int) -> list[float]:
    """Median images/s of each (train config, arrays, taxonomy, level) setting over `rounds`
    one-epoch trainings (of the view's own stage) on `images` training images, the settings
    taking turns within each round."""
    rates: list[list[float]] = [[] for _ in settings]
    for _ in range(rounds):
        for index, (train_config, arrays, taxonomy, level) in enumerate(settings):
            train, val = ({k: v[:n] for k, v in arrays[split].items()} for split, n in (("train", images), ("val", 256)))
            runtime = select_runtime(train_config.threads, precision=train_config.precision)
            history = []
            fit(Pixels(train["x"]), train["y"], Pixels(val["x"]), val["y"], num_classes=taxonomy.num_classes(level),
                config=train_config.model_copy(update={"epochs": 1, "stages": []}), runtime=runtime,
                on_epoch=history.append, level_heads=level_heads_for(train_config, taxonomy, level))
            rates[index].append(history[0]["images_per_s"])
    return [statistics.median(r) for r in rates]


def split_view(item: list[str], default_view: str) -> tuple[str, list[str]]:
    """The view an item names with `view=NAME` (else the default) and its other overrides."""
    views = [part.removeprefix("view=") for part in item if part.startswith("view=")]
    return (views[-1] if views else default_view), [part for part in item if not part.startswith("view=")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--view", default="fine-28")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override params.yaml for every setting (repeatable)")
    parser.add_argument("--compare", nargs="+", metavar="OVERRIDES",
                        help="settings to compare, each KEY=VALUE[;KEY=VALUE...] on top of --set")
    parser.add_argument("--limit", type=int, help="at most this many examples per official split")
    parser.add_argument("--probe-images", type=int, default=6000, help="training images of each side-by-side round")
    parser.add_argument("--probe-rounds", type=int, default=3)
    parser.add_argument("--record", nargs="?", const="train", metavar="SECTION",
                        help="also write the figures into docs/results.md, in SECTION (default: train)")
    args = parser.parse_args()
    if args.record:
        record.check(args.record)

    items = [item.split(";") for item in args.compare] if args.compare else [[]]
    loaded = {}  # view name -> (arrays, classes): each view's data is built once
    settings = []
    for item in items:
        view_name, extra = split_view(item, args.view)
        config = load_config(REPO / "params.yaml", args.overrides + extra)
        view = config.view(view_name)
        if view.name not in loaded:
            loaded[view.name] = load_arrays(config, view, args.limit)
        settings.append((config.train_config(view), *loaded[view.name]))

    rows = []
    if len(settings) > 1:
        rates = side_by_side_throughput(settings, args.probe_images, args.probe_rounds)
    for index, (item, setting) in enumerate(zip(items, settings)):
        row = {"setting": "; ".join(item) or "params.yaml", "view": split_view(item, args.view)[0], **train_once(*setting)}
        if len(settings) > 1:
            row["side_by_side_images_per_s"] = round(rates[index])
            row["ratio_to_first"] = round(rates[index] / rates[0], 2)
        rows.append(row)
    if len(rows) > 1:  # accuracy parity: each setting's test accuracy inside the other's interval
        first = rows[0]
        for row in rows[1:]:
            row["test_parity_with_first"] = bool(
                first["test_95_low"] <= row["test_accuracy"] <= first["test_95_high"]
                and row["test_95_low"] <= first["test_accuracy"] <= row["test_95_high"]
            )
    print(json.dumps(rows, indent=2))
    if args.record:
        record.record(args.record, rows)


if __name__ == "__main__":
    main()
