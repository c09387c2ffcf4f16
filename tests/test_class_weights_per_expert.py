"""Class weights are computed where the model learns: each segment expert (and each fold's
model) weighs the classes by its own training rows, not by the whole table's. The two
segments here have very different class shares (10% and 60% `yes`), so weights taken from the
whole table would be wrong for both experts."""
from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from granular.config import Config
from granular.modalities.experts import read_view_spec
from granular.pipeline.clean import clean_step
from granular.pipeline.import_raw import import_raw_step
from granular.pipeline.split import split_step
from granular.pipeline.train import train_step
from granular.pipeline.view import view_step
from granular.store.atomic import read_npz
from granular.store.paths import ProjectPaths

SEGMENTS = {"region": {"by": "column", "column": "region", "min_size": 200}}


def _settings(views: dict, **sections) -> dict:
    return {
        "data": {"source": {"format": "csv", "path": "table.csv"}, "table": {"target": "label", "id": "id"}},
        "taxonomy": None, "validate": {"min_per_class": 5}, "split": {"val_fraction": 0.25, "folds": 3},
        "views": views, "distill": {"enabled": False}, **sections,
    }


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = 1_600
    region = np.repeat(["a", "b"], rows // 2)
    yes = rng.random(rows) < np.where(region == "a", 0.1, 0.6)
    pd.DataFrame({
        "id": np.arange(rows), "region": region, "label": np.where(yes, "yes", "no"),
        "x0": rng.normal(size=rows) + yes, "x1": rng.normal(size=rows),
    }).to_csv(tmp_path / "table.csv", index=False)
    return tmp_path


def _train(root: Path, settings: dict, view: str) -> tuple[Config, ProjectPaths]:
    config, paths = Config.model_validate(settings), ProjectPaths(root)
    for step in (import_raw_step, clean_step, split_step):
        step(config, paths)
    view_step(config, paths, view)
    train_step(config, paths, view, warn=lambda line: None)
    return config, paths


def _balanced(y: np.ndarray) -> np.ndarray:
    counts = np.bincount(y, minlength=2)
    return len(y) / (2 * counts)


def _expected_by_network(paths: ProjectPaths, view: str) -> list[np.ndarray]:
    """Balanced weights of the global network's training rows (all) and of each expert's."""
    train = read_npz(paths.view_split(view, "train"))
    experts = read_view_spec(paths.model_dir(view))["reader"]["expert_values"]
    assert sorted(experts) == ["a", "b"]
    return [_balanced(train["y"]), *(_balanced(train["y"][train["segment"] == value]) for value in experts)]


def _check_differ_from_the_tables(weights: list[np.ndarray]) -> None:
    """The experts' weights are far from the global network's (the whole table's)."""
    overall, *experts = weights
    assert all(np.abs(expert - overall).max() > 0.5 for expert in experts)


def test_each_tree_expert_and_each_folds_trees_weigh_the_classes_by_their_own_rows(root: Path, monkeypatch):
    from granular.modalities.tables import trees

    fits = []  # (labels learned, the class_weight the classifier was given) of every fit

    def recording_fit(train, y_train, *args, **kwargs):
        fitted = real_fit(train, y_train, *args, **kwargs)
        fits.append((np.asarray(y_train), fitted.model.class_weight))
        return fitted

    real_fit = trees.fit_trees
    monkeypatch.setattr(trees, "fit_trees", recording_fit)
    view = "fine-all-hgb-region"
    settings = _settings({view: {"level": "fine", "features": "all", "learner": "hgb", "segments": SEGMENTS["region"]}},
                         trees={"max_iter": 20, "class_weight": "balanced"}, train={"threads": 1})
    _, paths = _train(root, settings, view)

    # The saved classifiers: the global trees weigh by every training row, each expert by its segment's.
    expected = _expected_by_network(paths, view)
    _check_differ_from_the_tables(expected)
    spec = read_view_spec(paths.model_dir(view))
    for number, weights in enumerate(expected):
        model = joblib.load(paths.model_dir(view) / f"network-{number}.joblib").model
        assert model.class_weight == pytest.approx({0: weights[0], 1: weights[1]})
    assert spec["networks"] == 3
    # Every fit, the fold models' too, weighs the classes by the rows it was given.
    assert len(fits) > spec["networks"]  # the fold models were fitted as well
    for y, given in fits:
        assert given == pytest.approx(dict(enumerate(_balanced(y))))


def test_each_network_expert_weighs_the_classes_by_its_own_rows_in_its_objective(root: Path, monkeypatch):
    from granular.nn import stages

    received = []  # the class weights of each network's objective, in training order

    class RecordingClasses(stages.Classes):
        def __init__(self, class_weights=None, *args, **kwargs):
            received.append(None if class_weights is None else np.asarray(class_weights))
            super().__init__(class_weights, *args, **kwargs)

    monkeypatch.setattr(stages, "Classes", RecordingClasses)
    view = "fine-all-region"
    settings = _settings(
        {"fine-all": {"level": "fine", "features": "all"}, view: {"level": "fine", "features": "all", "segments": SEGMENTS["region"]}},
        train={"epochs": 1, "batch_size": 256, "width": 8, "threads": 1, "class_weight": "balanced"},
    )
    settings["split"]["out_of_fold_rows"] = 0  # the view's own networks alone
    _, paths = _train(root, settings, view)

    expected = _expected_by_network(paths, view)
    _check_differ_from_the_tables(expected)
    assert len(received) == len(expected)  # network 0 (global) first, then the experts in order
    for got, weights in zip(received, expected):
        np.testing.assert_allclose(got, weights)
