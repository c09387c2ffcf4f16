"""Real example tables that need no download: datasets bundled inside scikit-learn, exported
as CSV files the table pipeline reads (an `id` column, the features, string labels or a
quantity).

- `iris`: 150 flowers, 4 measurements, 3 species. The species have a natural coarser level,
  their botanical series: Iris setosa belongs to series Tripetalae, Iris versicolor and Iris
  virginica to series Laevigatae (all three in subgenus Limniris). The measurements come in two
  groups, sepal and petal, each a feature view.
- `breast_cancer`: 569 breast masses (Wisconsin diagnostic), 30 measurements, malignant or
  benign. The measurements are ten properties of the cell nuclei, each summarised three ways
  over the nuclei of an image: the mean, the standard error and the worst (mean of the three
  largest) value; each summary is a feature view. No coarser level.
- `diabetes`: 442 diabetes patients, age, sex, body mass index, blood pressure and six blood
  serum measurements (in their original units), and a quantity to predict: a measure of the
  disease's progression one year later (25 to 346), a regression target.

Each has its params file in examples/: `examples/NAME.yaml`.

    python -m granular.demo.examples iris --out data/iris.csv
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
from sklearn import datasets

from granular.store.atomic import write_csv


@dataclass(frozen=True)
class Example:
    load: Callable  # a scikit-learn loader of a dataset bundled with the package (no download)
    target: str  # the name of the label column
    # Coarser label columns: column name -> {fine class -> its class at that level}.
    ancestors: dict[str, dict[str, str]] = field(default_factory=dict)


EXAMPLES = {
    "iris": Example(
        load=datasets.load_iris,
        target="species",
        ancestors={"series": {"setosa": "Tripetalae", "versicolor": "Laevigatae", "virginica": "Laevigatae"}},
    ),
    "breast_cancer": Example(load=datasets.load_breast_cancer, target="diagnosis"),
    "diabetes": Example(load=lambda: datasets.load_diabetes(scaled=False), target="progression"),
}


def column_name(feature: str) -> str:
    """A feature name as a plain column name: 'sepal length (cm)' -> 'sepal_length_cm'."""
    return re.sub(r"[^a-z0-9]+", "_", feature.lower()).strip("_")


def _example(name: str) -> Example:
    if name not in EXAMPLES:
        raise ValueError(f"no example table named {name!r}; examples are {sorted(EXAMPLES)}")
    return EXAMPLES[name]


def example_frame(name: str) -> pd.DataFrame:
    """The example table: id, the features (float), the label, then any coarser label columns."""
    example = _example(name)
    bunch = example.load()
    if "target_names" in bunch:
        labels = pd.Series(bunch.target_names[bunch.target], dtype=str)
    else:  # a quantity (regression)
        labels = pd.Series(bunch.target, dtype=float)
    frame = pd.DataFrame(bunch.data, columns=[column_name(f) for f in bunch.feature_names])
    frame.insert(0, "id", range(len(frame)))
    frame[example.target] = labels
    for column, parents in example.ancestors.items():
        frame[column] = labels.map(parents)
    return frame


def export_example(name: str, path: Path | str) -> Path:
    """Write the example table `name` to `path` as CSV (atomically); returns the path."""
    path = Path(path)
    write_csv(path, example_frame(name))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m granular.demo.examples", description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(EXAMPLES))
    parser.add_argument("--out", type=Path, help="CSV file to write (default: data/NAME.csv)")
    args = parser.parse_args(argv)
    path = export_example(args.name, args.out or Path("data") / f"{args.name}.csv")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
