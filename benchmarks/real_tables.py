"""The fused model against the boosted-trees baseline and the majority class on real tables, run
as a user runs them: a parameters file, then `granular run --params` in a fresh project.

    .venv/bin/python benchmarks/real_tables.py                       # the tables bundled with scikit-learn
    .venv/bin/python benchmarks/real_tables.py --table diamonds=path/to/diamonds.csv:cut

Each table gets the same views: a network and boosted trees on every feature. For each, prints
the test accuracy and balanced accuracy of the fused model, the baseline (`hgb`) and the
majority class with their 95% bootstrap intervals, and the fused model's gain over the baseline
on the same test rows: its paired bootstrap interval and McNemar's test.
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

BUNDLED = {"breast_cancer": "load_breast_cancer", "wine": "load_wine", "digits": "load_digits", "iris": "load_iris"}
VIEWS = {
    "fine-all": {"level": "fine", "features": "all"},
    "fine-all-hgb": {"level": "fine", "features": "all", "learner": "hgb"},
}
TRAIN = {"epochs": 30, "batch_size": 64, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.0001, "width": 64}


def bundled(name: str) -> pd.DataFrame:
    from sklearn import datasets

    data = getattr(datasets, BUNDLED[name])(as_frame=True)
    frame = data.frame.rename(columns=lambda c: "".join(ch if ch.isalnum() else "_" for ch in c).strip("_"))
    frame["label"] = np.asarray(data.target_names, dtype=str)[frame.pop("target")]
    return frame


def run(name: str, frame: pd.DataFrame, target: str, root: Path) -> dict:
    (root / "data").mkdir(parents=True)
    frame.to_csv(root / "data" / "table.csv", index=False)
    batch = 256 if len(frame) > 10_000 else 64
    params = {
        "data": {"source": {"format": "csv", "path": "data/table.csv"}, "table": {"target": target}},
        "taxonomy": None, "views": VIEWS, "train": {**TRAIN, "batch_size": batch}, "distill": {"enabled": False},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run([str(REPO / ".venv/bin/granular"), "run", "--root", str(root)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: granular run failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    metrics = json.loads((root / "data/evaluation/metrics.json").read_text())
    answers = pd.read_csv(root / "data/evaluation/test_predictions.csv")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", action="append", default=[], help="NAME=CSV:TARGET, a table of your own")
    parser.add_argument("--bundled", nargs="*", default=["breast_cancer", "wine", "digits"], choices=sorted(BUNDLED))
    args = parser.parse_args()
    tables = [(name, bundled(name), "label") for name in args.bundled]
    for spec in args.table:
        name, _, rest = spec.partition("=")
        path, _, target = rest.rpartition(":")
        frame = pd.read_csv(path)
        # An unnamed first column is the row numbers R's write.csv adds: an id, not a feature.
        tables.append((name, frame.drop(columns=[c for c in frame.columns if c.startswith("Unnamed:")]), target))
    for name, frame, target in tables:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(run(name, frame, target, Path(folder))), flush=True)


if __name__ == "__main__":
    main()
