"""The fused model against the boosted-trees baseline and the majority class (a regression's
mean) on real tables, run as a user runs them: a parameters file, then `granular run` in a
fresh project.

    .venv/bin/python benchmarks/real_tables.py          # the tables bundled with scikit-learn
    .venv/bin/python benchmarks/real_tables.py --table diamonds=path/to/diamonds.csv:cut \
        --regression diamonds_price=path/to/diamonds.csv:price

Each table gets the same views: a network and boosted trees on every feature. For each, prints
the test accuracy and balanced accuracy of the fused model, the baseline (`hgb`) and the
majority class with their 95% bootstrap intervals, and the fused model's gain over the baseline
on the same test rows: its paired bootstrap interval and McNemar's test. For a regression
target (`diabetes`, `--regression`): R², RMSE and MAE, the paired interval of the gain in R²
and the paired t-test of the two models' squared errors.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from granular.core import evaluate  # noqa: E402

BUNDLED = {"breast_cancer": "load_breast_cancer", "wine": "load_wine", "digits": "load_digits", "iris": "load_iris",
           "diabetes": "load_diabetes"}
REGRESSION = {"diabetes"}  # of the bundled tables: a quantity to predict
VIEWS = {
    "fine-all": {"level": "fine", "features": "all"},
    "fine-all-hgb": {"level": "fine", "features": "all", "learner": "hgb"},
}
TRAIN = {"epochs": 30, "batch_size": 64, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.0001, "width": 64}


def bundled(name: str) -> pd.DataFrame:
    from sklearn import datasets

    options = {"scaled": False} if name in REGRESSION else {}  # the measurements in their own units
    data = getattr(datasets, BUNDLED[name])(as_frame=True, **options)
    frame = data.frame.rename(columns=lambda c: "".join(ch if ch.isalnum() else "_" for ch in c).strip("_"))
    target = frame.pop("target")
    frame["label"] = target if name in REGRESSION else np.asarray(data.target_names, dtype=str)[target]
    return frame


def run(name: str, frame: pd.DataFrame, target: str, root: Path, regression: bool = False) -> dict:
    (root / "data").mkdir(parents=True)
    frame.to_csv(root / "data" / "table.csv", index=False)
    batch = 256 if len(frame) > 10_000 else 64
    table = {"target": target, **({"task": "regression"} if regression else {})}
    params = {
        "data": {"source": {"format": "csv", "path": "data/table.csv"}, "table": table},
        "taxonomy": None, "views": VIEWS, "train": {**TRAIN, "batch_size": batch}, "distill": {"enabled": False},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run([str(REPO / ".venv/bin/granular"), "run", "--root", str(root)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: granular run failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    metrics = json.loads((root / "data/evaluation/metrics.json").read_text())
    answers = pd.read_csv(root / "data/evaluation/test_predictions.csv")
    if regression:
        return _regression_figures(name, frame, metrics, answers)
    fused, trees = (answers["fused"] == answers["actual"]).to_numpy(), (answers["hgb"] == answers["actual"]).to_numpy()
    resamples = evaluate.resample_counts(len(answers))
    low, high = evaluate.percentile_interval(evaluate.resampled_means(resamples, fused.astype(np.float32) - trees))
    figures = {"table": name, "rows": len(frame), "test_rows": len(answers)}
    for model in ("fused", "hgb", "majority"):
        scores = metrics["test"][model]
        figures[model] = {key: round(scores[key], 4) for key in
                          ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "balanced_accuracy", "roc_auc")}
    figures["fused_minus_hgb"] = {"accuracy": round(float(fused.mean() - trees.mean()), 4),
                                  "ci": [round(low, 4), round(high, 4)], "mcnemar": evaluate.mcnemar(fused, trees)}
    return figures


def _regression_figures(name: str, frame: pd.DataFrame, metrics: dict, answers: pd.DataFrame) -> dict:
    """R², RMSE and MAE with intervals; the fused model's gain in R² over the trees on the same
    test rows (paired interval) and the paired test of their squared errors."""
    y = answers["actual"].to_numpy()
    resamples = evaluate.resample_counts(len(answers))
    resampled = {model: evaluate.resampled_regression(resamples, y, answers[model].to_numpy())["r2"] for model in ("fused", "hgb")}
    low, high = evaluate.percentile_interval(resampled["fused"] - resampled["hgb"])
    figures = {"table": name, "rows": len(frame), "test_rows": len(answers), "task": "regression"}
    for model in ("fused", "hgb", "mean"):
        scores = metrics["test"][model]
        figures[model] = {key: round(scores[key], 4) for key in ("r2", "r2_ci_low", "r2_ci_high", "rmse", "mae")}
    figures["fused_minus_hgb"] = {
        "r2": round(metrics["test"]["fused"]["r2"] - metrics["test"]["hgb"]["r2"], 4), "ci": [round(low, 4), round(high, 4)],
        "paired_test": evaluate.paired_squared_error_test(answers["fused"] - y, answers["hgb"] - y),
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", action="append", default=[], help="NAME=CSV:TARGET, a table of your own")
    parser.add_argument("--regression", action="append", default=[], help="NAME=CSV:TARGET, a quantity to predict")
    parser.add_argument("--bundled", nargs="*", default=["breast_cancer", "wine", "digits", "diabetes"], choices=sorted(BUNDLED))
    args = parser.parse_args()
    tables = [(name, bundled(name), "label", name in REGRESSION) for name in args.bundled]
    for spec, regression in [*((s, False) for s in args.table), *((s, True) for s in args.regression)]:
        name, _, rest = spec.partition("=")
        path, _, target = rest.rpartition(":")
        frame = pd.read_csv(path)
        # An unnamed first column is the row numbers R's write.csv adds: an id, not a feature.
        tables.append((name, frame.drop(columns=[c for c in frame.columns if c.startswith("Unnamed:")]), target, regression))
    for name, frame, target, regression in tables:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(run(name, frame, target, Path(folder), regression)), flush=True)


if __name__ == "__main__":
    main()
