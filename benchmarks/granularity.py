"""Does multi-granularity pay? One table of models on the same data, each with its test accuracy
(95% bootstrap interval), McNemar's test against the best single view, and what it cost.

    .venv/bin/python benchmarks/granularity.py                      # params.yaml's views and epochs
    .venv/bin/python benchmarks/granularity.py --limit 20000 --set views.fine-28.train.epochs=4   # a quicker look
    .venv/bin/python benchmarks/granularity.py --record granularity

The networks, each trained once with the view's recipe from params.yaml (and --set):
- every unsegmented image view named by --views (default: those of params.yaml); a specialist
  view (`classes:`) learns from its classes' examples alone, as the pipeline trains it;
- one fine-28 network given the image passes of all those views, its epochs (each stage's)
  scaled up to match: what the same training would buy spent on one network;
- a second fine-28 network with the next seed (the plain ensemble a sceptic tries first);
- the staged network: fine-28 trained on the coarse labels for a third of its first stage's
  epochs (of its own, without stages), then as fine-28 is (the same image passes);
- fine-28 and fine-28's level at --low-resolution (params.yaml's view of that name, or one
  with the shared training settings) co-trained with --consistency (granular/nn/cotrain.py).

The rows: the best single view (the fine view, not a specialist, with the best validation
accuracy); the one network of the views' passes; the two fine-28 networks averaged; the views
fused late (fusion.strategy, cross-fitted on the validation folds, specialists refining, as the
pipeline fuses); the staged network alone; it fused with the views; the co-trained fine-28
alone; the co-trained pair fused. McNemar's test is against the best single view; the views
fused late are also tested against the one network of their passes (printed after the table).
Each row counts its training image passes (images x epochs, summed over its networks) and
seconds (training steps only, as `seconds` in each epoch's record; a co-trained row counts
both networks' steps). Data is the real Fashion-MNIST, cleaned and split as the pipeline does;
nothing is written but the --record section of docs/results.md.
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
from granular.pipeline.reads import specialist_classes  # noqa: E402
from granular.core import evaluate, fusion, partition  # noqa: E402
from granular.nn.cotrain import Member, fit_together  # noqa: E402
from granular.nn.device import select_runtime  # noqa: E402
from granular.nn.inputs import Pixels  # noqa: E402
from granular.nn.stages import fit_staged  # noqa: E402
from granular.nn.predict import predict_proba  # noqa: E402

FULL_VIEW = "fine-28"


def train_network(name: str, train_config, arrays: dict, taxonomy, level: str, classes=None) -> dict:
    """One network's val/test probabilities, image passes and training seconds; a specialist's
    (`classes`: its fine class ids) learns and is validated on those classes' examples alone."""
    runtime = select_runtime(train_config.threads, precision=train_config.precision)
    learn = {split: np.isin(arrays[split]["y"], classes) if classes is not None else slice(None)
             for split in ("train", "val")}
    x = {split: Pixels(arrays[split]["x"][learn[split]]) for split in learn}
    y = {split: arrays[split]["y"][learn[split]] for split in learn}
    history = []
    started = time.perf_counter()
    trained = fit_staged(x["train"], y["train"], x["val"], y["val"], taxonomy, level, train_config, runtime,
                         on_epoch=history.append)
    proba = {split: predict_proba(trained, Pixels(arrays[split]["x"]), runtime) for split in ("val", "test")}
    print(f"{name}: trained in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return {
        "level": level, **proba, "classes": classes,
        "passes": len(y["train"]) * train_config.total_epochs,
        "seconds": sum(r["seconds"] for r in history),
    }


def scaled(train_config, factor: float):
    """`train_config` with each stage's epochs, and its own, multiplied by `factor` (rounded)."""
    dump = train_config.model_dump()
    dump["epochs"] = max(1, round(dump["epochs"] * factor))
    dump["stages"] = [{**stage, "epochs": max(1, round(stage["epochs"] * factor))} for stage in dump["stages"]]
    return train_config.model_validate(dump)


def coarse_first(train_config):
    """`train_config` learning the coarse labels first, for a third of its first stage's epochs
    (of its own without stages) at that stage's resolution: the same image passes."""
    dump = train_config.model_dump()
    if dump["stages"]:
        first = dump["stages"][0]
        coarse = max(1, first["epochs"] // 3)
        dump["stages"] = [{**first, "level": "coarse", "epochs": coarse, "parts": {}},
                          {**first, "epochs": first["epochs"] - coarse}, *dump["stages"][1:]]
    else:
        coarse = max(1, dump["epochs"] // 3)
        dump["stages"], dump["epochs"] = [{"level": "coarse", "epochs": coarse}], dump["epochs"] - coarse
    return train_config.model_validate(dump), coarse


def co_train(views: dict[str, tuple], taxonomy, weight: float) -> dict[str, dict]:
    """The views' networks (name -> (train config, arrays, level)) co-trained: each one's val/test
    probabilities and image passes; the seconds of both networks' steps go to the first, which
    cannot be had without the other."""
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
    out[names[0]]["seconds"] = sum(r["seconds"] for history in histories.values() for r in history)
    return out


def fused(config, taxonomy, networks: dict[str, dict], y_val: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Test probabilities of the networks fused as the pipeline fuses its views."""
    parents = {name: taxonomy.parent[network["level"]] for name, network in networks.items()}
    val = {name: network["val"] for name, network in networks.items()}
    specialists = {name: network["classes"] for name, network in networks.items() if network.get("classes") is not None}
    fuser, choice = fusion.choose_fusion(config.fusion, parents, val, y_val, folds, specialists=specialists)
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
    parser.add_argument("--low-resolution", type=int, default=14, help="the resolution co-trained with fine-28")
    parser.add_argument("--consistency", type=float, default=1.0, help="the co-training's consistency weight")
    parser.add_argument("--limit", type=int, help="at most this many examples per official split")
    parser.add_argument("--record", nargs="?", const="granularity", metavar="SECTION",
                        help="also write the table into docs/results.md, in SECTION (default: granularity)")
    args = parser.parse_args()
    if args.record:
        record.check(args.record)

    config = load_config(REPO / "params.yaml", args.overrides)
    names = args.views or [n for n, v in config.views.items() if isinstance(v, ImageView) and not v.segments]
    if FULL_VIEW not in names:
        raise SystemExit(f"--views must include {FULL_VIEW}, the view the ensemble and the staged network build on")
    low = ImageView(level=config.view(FULL_VIEW).level, resolution=args.low_resolution)
    low = config.views.get(low.name, low)
    networks, data, taxonomy = {}, {}, None
    for view in [*(config.view(name) for name in names), *([] if low.name in names else [low])]:
        arrays, taxonomy, level = load_arrays(config, view, args.limit)
        data[view.name] = (config.train_config(view), arrays, level)
        if view.name in names:
            classes = specialist_classes(taxonomy, view) if view.classes else None
            networks[view.name] = train_network(view.name, config.train_config(view), arrays, taxonomy, level, classes)
    full_config, full_arrays, _ = data[FULL_VIEW]

    passes = sum(networks[name]["passes"] for name in names)
    matched_config = scaled(full_config, passes / networks[FULL_VIEW]["passes"])
    matched = train_network("one network of the views' passes", matched_config, full_arrays, taxonomy, "fine")
    second = full_config.model_copy(update={"seed": full_config.seed + 1})
    networks[f"{FULL_VIEW} (seed +1)"] = train_network("second seed", second, full_arrays, taxonomy, "fine")
    staged_config, coarse_epochs = coarse_first(full_config)
    staged = train_network("staged", staged_config, full_arrays, taxonomy, "fine")

    co_trained = co_train({FULL_VIEW: data[FULL_VIEW], low.name: data[low.name]}, taxonomy, args.consistency)

    y_val, y_test = full_arrays["val"]["y"], full_arrays["test"]["y"]
    every_val = np.full(len(y_val), partition.VAL_SPLIT)
    folds = partition.assign_folds(y_val, every_val, config.split.folds, config.split.seed)
    views = {name: networks[name] for name in names}
    fine_views = [name for name in names if views[name]["level"] == "fine" and views[name]["classes"] is None]
    best_name = max(fine_views, key=lambda name: (views[name]["val"].argmax(1) == y_val).mean())
    best = views[best_name]["test"].argmax(1) == y_test
    pair = [networks[FULL_VIEW], networks[f"{FULL_VIEW} (seed +1)"]]
    late = fused(config, taxonomy, views, y_val, folds)
    rows = [
        row(f"best single view ({best_name})", views[best_name]["test"], y_test, [views[best_name]], None),
        row(f"one {FULL_VIEW} of the views' image passes ({matched_config.total_epochs} epochs)", matched["test"],
            y_test, [matched], best),
        row(f"{FULL_VIEW}, two seeds averaged", (pair[0]["test"] + pair[1]["test"]) / 2, y_test, pair, best),
        row(f"views fused late ({', '.join(names)})", late, y_test, list(views.values()), best),
        row(f"staged network alone (the coarse labels first, {coarse_epochs} epochs)", staged["test"], y_test, [staged], best),
        row("staged network fused with the views", fused(config, taxonomy, {**views, "staged": staged}, y_val, folds),
            y_test, [*views.values(), staged], best),
        row(f"{FULL_VIEW} co-trained with {low.name} (consistency {args.consistency:g})",
            co_trained[FULL_VIEW]["test"], y_test, [co_trained[FULL_VIEW]], best),
        row(f"co-trained {FULL_VIEW} and {low.name} fused", fused(config, taxonomy, co_trained, y_val, folds),
            y_test, list(co_trained.values()), best),
    ]
    print(json.dumps(rows, indent=2))
    versus = evaluate.mcnemar(late.argmax(1) == y_test, matched["test"].argmax(1) == y_test)
    print(f"views fused late against one {FULL_VIEW} of their passes: only the fused right b={versus['b']}, "
          f"only the one network c={versus['c']}, McNemar p = {versus['p_value']:.3g}", flush=True)
    if args.record:
        record.record(args.record, rows)


if __name__ == "__main__":
    main()
