"""Does multi-granularity pay? One table of models on the same data, each with its test accuracy
(95% bootstrap interval), McNemar's test against the best single view, and what it cost.

    .venv/bin/python benchmarks/granularity.py                      # params.yaml's views and epochs
    .venv/bin/python benchmarks/granularity.py --set train.epochs=4 --limit 20000   # a quicker look
    .venv/bin/python benchmarks/granularity.py --set train.epochs=6 --record granularity

The networks, each trained once with the view's recipe from params.yaml (and --set):
- every unsegmented image view named by --views (default: those of params.yaml);
- a second fine-28 network with the next seed (the plain ensemble a sceptic tries first);
- the staged network: fine-28 trained on the coarse labels for --coarse-epochs, then on the
  fine ones for the rest of fine-28's epochs (the same image passes as fine-28 alone);
- fine-28 and the low-resolution view (--low-view) co-trained with --consistency
  (granular/nn/cotrain.py), each with its own recipe and seed.

The rows: the best single view (the fine view with the best validation accuracy); the two
fine-28 networks averaged; the views fused late (fusion.strategy, cross-fitted on the
validation folds, as the pipeline fuses); the staged network alone; it fused with the views;
the co-trained fine-28 alone; the co-trained pair fused. Each row counts its training image
passes (images x epochs, summed over its networks) and seconds (training steps only, as
`seconds` in each epoch's record; a co-trained pair's steps take turns, so its seconds are
counted once for the pair). Data is the real Fashion-MNIST, cleaned and split as the
pipeline does; nothing is written but the --record section of docs/measurements.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import record  # noqa: E402  (benchmarks/record.py)
from train import load_arrays  # noqa: E402  (benchmarks/train.py)

from granular.config import ImageView, load_config  # noqa: E402
from granular.core import evaluate, fusion, partition  # noqa: E402
from granular.nn.cotrain import Member, fit_together  # noqa: E402
from granular.nn.device import select_runtime  # noqa: E402
from granular.nn.inputs import Pixels  # noqa: E402
from granular.nn.stages import fit_staged  # noqa: E402
from granular.nn.train import predict_proba  # noqa: E402

FULL_VIEW = "fine-28"


def train_network(name: str, train_config, arrays: dict, taxonomy, level: str) -> dict:
    """One network's val/test probabilities, image passes and training seconds."""
    runtime = select_runtime(train_config.threads, precision=train_config.precision)
    history = []
    started = time.perf_counter()
    trained = fit_staged(
        Pixels(arrays["train"]["x"]), arrays["train"]["y"], Pixels(arrays["val"]["x"]), arrays["val"]["y"],
        taxonomy, level, train_config, runtime, on_epoch=history.append,
    )
    proba = {split: predict_proba(trained, Pixels(arrays[split]["x"]), runtime) for split in ("val", "test")}
    print(f"{name}: trained in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return {
        "level": level, **proba,
        "passes": len(arrays["train"]["y"]) * train_config.total_epochs,
        "seconds": sum(r["seconds"] for r in history),
    }


def co_train(views: dict[str, tuple], taxonomy, weight: float) -> dict[str, dict]:
    """The views' networks (name -> (train config, arrays, level)) co-trained: each one's val/test
    probabilities and image passes; the pair's training seconds go to the first."""
    names = list(views)
    first_config = views[names[0]][0]
    runtime = select_runtime(first_config.threads, precision=first_config.precision)
    histories = {name: [] for name in names}
    members = [
        Member(Pixels(arrays["train"]["x"]), arrays["train"]["y"], Pixels(arrays["val"]["x"]), arrays["val"]["y"],
               taxonomy.num_classes(level), train_config, on_epoch=histories[name].append)
        for name, (train_config, arrays, level) in views.items()
    ]
    started = time.perf_counter()
    trained = fit_together(members, weight, runtime)
    print(f"co-trained {names} in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    out = {}
    for name, network in zip(names, trained):
        train_config, arrays, level = views[name]
        out[name] = {
            "level": level,
            **{split: predict_proba(network, Pixels(arrays[split]["x"]), runtime) for split in ("val", "test")},
            "passes": len(arrays["train"]["y"]) * train_config.epochs, "seconds": 0.0,
        }
    out[names[0]]["seconds"] = max(sum(r["seconds"] for r in history) for history in histories.values())
    return out


def fused(config, taxonomy, networks: dict[str, dict], y_val: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Test probabilities of the networks fused as the pipeline fuses its views."""
    parents = {name: taxonomy.parent[network["level"]] for name, network in networks.items()}
    val = {name: network["val"] for name, network in networks.items()}
    fuser, choice = fusion.choose_fusion(config.fusion, parents, val, y_val, folds)
    print(f"fusion of {sorted(networks)}: {choice['selection']['reason']}", file=sys.stderr, flush=True)
    return fuser.predict_proba({name: network["test"] for name, network in networks.items()})


def row(model: str, proba: np.ndarray, y_test: np.ndarray, networks: list[dict], best: np.ndarray | None) -> dict:
    correct = proba.argmax(1) == y_test
    low, high = evaluate.percentile_interval(
        evaluate.resampled_means(evaluate.resample_counts(len(y_test)), correct.astype(np.float32))
    )
    out = {"model": model, "test_accuracy": round(float(correct.mean()), 4),
           "test_95_low": round(low, 4), "test_95_high": round(high, 4)}
    if best is not None:
        test = evaluate.mcnemar(correct, best)
        out.update(gain=round(float(correct.mean() - best.mean()), 4), only_this_right=test["b"],
                   only_best_right=test["c"], mcnemar_p=float(f"{test['p_value']:.3g}"))
    out.update(networks=len(networks), image_passes=sum(n["passes"] for n in networks),
               train_seconds=round(sum(n["seconds"] for n in networks), 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override params.yaml (repeatable)")
    parser.add_argument("--views", nargs="+", help="unsegmented image views to train (default: params.yaml's)")
    parser.add_argument("--coarse-epochs", type=int, help="the staged network's coarse epochs (default: a third)")
    parser.add_argument("--low-view", default="fine-14", help="the view co-trained with fine-28")
    parser.add_argument("--consistency", type=float, default=1.0, help="the co-training's consistency weight")
    parser.add_argument("--limit", type=int, help="at most this many examples per official split")
    parser.add_argument("--record", nargs="?", const="granularity", metavar="SECTION",
                        help="also write the table into docs/measurements.md, in SECTION (default: granularity)")
    args = parser.parse_args()
    if args.record:
        record.check(args.record)

    config = load_config(REPO / "params.yaml", args.overrides)
    names = args.views or [n for n, v in config.views.items() if isinstance(v, ImageView) and not v.segments]
    if FULL_VIEW not in names:
        raise SystemExit(f"--views must include {FULL_VIEW}, the view the ensemble and the staged network build on")
    networks, data, taxonomy = {}, {}, None
    for name in dict.fromkeys([*names, args.low_view]):
        view = config.view(name)
        arrays, taxonomy, level = load_arrays(config, view, args.limit)
        data[name] = (config.train_config(view), arrays, level)
        if name in names:
            networks[name] = train_network(name, config.train_config(view), arrays, taxonomy, level)
    full_config, full_arrays, _ = data[FULL_VIEW]

    second = full_config.model_copy(update={"seed": full_config.seed + 1})
    networks[f"{FULL_VIEW} (seed +1)"] = train_network("second seed", second, full_arrays, taxonomy, "fine")
    coarse_epochs = args.coarse_epochs or max(1, full_config.epochs // 3)
    staged_config = full_config.model_validate({
        **full_config.model_dump(), "epochs": full_config.epochs - coarse_epochs,
        "stages": [{"level": "coarse", "epochs": coarse_epochs}],
    })
    staged = train_network("staged", staged_config, full_arrays, taxonomy, "fine")

    low_high = {FULL_VIEW: data[FULL_VIEW], args.low_view: data[args.low_view]}
    co_trained = co_train(low_high, taxonomy, args.consistency)

    y_val, y_test = full_arrays["val"]["y"], full_arrays["test"]["y"]
    every_val = np.full(len(y_val), partition.VAL_SPLIT)
    folds = partition.assign_folds(y_val, every_val, config.split.folds, config.split.seed)
    views = {name: networks[name] for name in names}
    fine_views = [name for name in names if views[name]["level"] == "fine"]
    best_name = max(fine_views, key=lambda name: (views[name]["val"].argmax(1) == y_val).mean())
    best = views[best_name]["test"].argmax(1) == y_test
    pair = [networks[FULL_VIEW], networks[f"{FULL_VIEW} (seed +1)"]]
    rows = [
        row(f"best single view ({best_name})", views[best_name]["test"], y_test, [views[best_name]], None),
        row(f"{FULL_VIEW}, two seeds averaged", (pair[0]["test"] + pair[1]["test"]) / 2, y_test, pair, best),
        row(f"views fused late ({', '.join(names)})", fused(config, taxonomy, views, y_val, folds), y_test,
            list(views.values()), best),
        row(f"staged network alone (coarse {coarse_epochs} + fine {staged_config.epochs} epochs)", staged["test"],
            y_test, [staged], best),
        row("staged network fused with the views", fused(config, taxonomy, {**views, "staged": staged}, y_val, folds),
            y_test, [*views.values(), staged], best),
        row(f"{FULL_VIEW} co-trained with {args.low_view} (consistency {args.consistency:g})",
            co_trained[FULL_VIEW]["test"], y_test, [co_trained[FULL_VIEW]], best),
        row(f"co-trained {FULL_VIEW} and {args.low_view} fused", fused(config, taxonomy, co_trained, y_val, folds),
            y_test, list(co_trained.values()), best),
    ]
    print(json.dumps(rows, indent=2))
    if args.record:
        record.record(args.record, rows)


if __name__ == "__main__":
    main()
