"""A small table fuses out of fold: each view (and the boosted-trees baseline) is trained again
on folds of the training and validation rows, and the fusion and its decision threshold are
fitted on every such row's answer from a model that did not learn it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from granular.config import Config
from granular.core.partition import TEST_SPLIT, TRAIN_SPLIT, VAL_SPLIT
from granular.demo import synthetic
from granular.modalities.base import TrainingData
from granular.modalities.experts import ExpertPlan, single_network
from granular.nn.inputs import TableArrays
from granular.pipeline.clean import clean_step
from granular.pipeline.fuse import fuse_step
from granular.pipeline.import_raw import import_raw_step
from granular.pipeline.out_of_fold import train_out_of_fold
from granular.pipeline.reads import FOLDS_FILE, OUT_OF_FOLD
from granular.pipeline.split import split_step
from granular.pipeline.train import train_step
from granular.pipeline.view import view_step
from granular.serving.bundle import FUSION_FILE
from granular.store.atomic import read_npz, write_npz
from granular.store.paths import ProjectPaths

SETTINGS = {
    "data": {"source": {"format": "parquet", "path": "table.parquet"},
             "table": {"target": "fine", "id": "id", "exclude": ["coarse"], "test_fraction": 0.3}},
    "taxonomy": None,
    "validate": {"min_per_class": 5},
    "split": {"folds": 3},
    "views": {
        "fine-all": {"level": "fine", "features": "all"},
        "fine-all-region": {"level": "fine", "features": "all", "segments": {"by": "column", "column": "region", "min_size": 100}},
    },
    "train": {"epochs": 6, "batch_size": 64, "width": 16, "threads": 1},
    "trees": {"max_iter": 30},
    "fusion": {"strategy": "stacking", "threshold_metric": "balanced_accuracy"},
    "distill": {"enabled": False},
}


class _Remembers:
    """A stand-in learner: it answers 1 for a row it learned (its id in the first column), else 0."""

    learner = "trees"
    num_classes = 1

    def __init__(self, learned: np.ndarray):
        self.learned = set(learned.tolist())

    def outputs(self, x: TableArrays) -> np.ndarray:
        return np.isin(x.numeric[:, 0], list(self.learned)).astype(np.float64)[:, None]


def _by_id(rows: np.ndarray) -> TableArrays:
    return TableArrays(rows[:, None].astype(np.float32), np.zeros((len(rows), 0), np.int64), ())


def test_each_row_is_answered_by_a_model_that_did_not_learn_it():
    ids = {"train": np.arange(0, 60), "val": np.arange(60, 80), "test": np.arange(80, 100)}
    data = TrainingData(
        x={s: _by_id(r) for s, r in ids.items()}, y={s: r % 2 for s, r in ids.items()},
        plan=single_network({s: len(r) for s, r in ids.items()}), reader=None,
    )
    fold = np.arange(80) % 4
    learned_per_fold = []

    def fitter(f):
        def fit(number, tag, x_train, y_train, x_val, y_val, record_epoch):
            learned_per_fold.append(x_train.numeric[:, 0])
            return _Remembers(x_train.numeric[:, 0])
        return fit

    folds = train_out_of_fold(data, fold, fitter, runtime=None)

    assert folds.fitting.shape == (80, 1)
    assert not folds.fitting.any()  # no row was answered by a model that learned it
    assert [len(learned) for learned in learned_per_fold] == [60, 60, 60, 60]
    assert [r["answered"] for r in folds.records] == [20, 20, 20, 20]
    assert np.array_equal(folds.test, np.zeros((20, 1)))  # the test rows: learned by none


def test_an_expert_with_nothing_to_learn_in_a_fold_is_named():
    ids = {"train": np.arange(0, 20), "val": np.arange(20, 30), "test": np.arange(30, 40)}
    route = {s: np.zeros(len(r), np.int64) for s, r in ids.items()}
    route["train"][0] = 1  # one row of the expert's segment: some fold learns none of it
    data = TrainingData(
        x={s: _by_id(r) for s, r in ids.items()}, y={s: r % 2 for s, r in ids.items()},
        plan=ExpertPlan(route=route, tags=[{"segment": "global"}, {"segment": "north"}], fallback=True), reader=None,
    )
    with pytest.raises(ValueError, match="network 1 .*north.*no rows to learn outside the fold.*min_size"):
        train_out_of_fold(data, np.arange(30) % 2, lambda f: None, runtime=None)


@pytest.fixture(scope="module")
def fused(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, ProjectPaths]:
    """A 1,200-row table of two classes, 30% of them the rarer one, every step to the fusion."""
    root = tmp_path_factory.mktemp("out-of-fold")
    synthetic.generate(1_200, root / "table.parquet", seed=0, segments=2, coarse=2, fine_per_coarse=1, label_noise=0.3)
    config = Config.model_validate(SETTINGS)
    paths = ProjectPaths(root)
    for step in (import_raw_step, clean_step, split_step):
        step(config, paths)
    for view in config.views:
        view_step(config, paths, view)
        train_step(config, paths, view, warn=lambda line: None)
    fuse_step(config, paths)
    return config, paths


def test_a_small_table_fuses_on_every_training_and_validation_row_out_of_fold(fused):
    config, paths = fused
    splits = read_npz(paths.splits)
    fitting = np.isin(splits["split"], (TRAIN_SPLIT, VAL_SPLIT))
    assert (splits["fold"][fitting] >= 0).all() and (splits["fold"][~fitting] == -1).all()
    assert set(np.unique(splits["fold"][fitting])) == {0, 1, 2}
    for view in config.views:
        outputs = read_npz(paths.model_dir(view) / "predictions.npz")
        assert len(outputs[OUT_OF_FOLD]) == fitting.sum()
        records = json.loads((paths.model_dir(view) / FOLDS_FILE).read_text())
        assert sum(record["answered"] for record in records) == fitting.sum()
    choice = json.loads((paths.fused_dir / FUSION_FILE).read_text())
    assert choice["fitted_on"] == {"rows": int(fitting.sum()), "folds": 3, "out_of_fold": True}
    assert (splits["split"] == TEST_SPLIT).sum() == len(read_npz(paths.fused_dir / "predictions.npz")["test_proba"])


def test_the_decision_threshold_is_fitted_on_the_out_of_fold_answers_only(fused):
    config, paths = fused
    threshold = json.loads((paths.fused_dir / FUSION_FILE).read_text())["threshold"]
    rng = np.random.default_rng(0)

    def rewrite(key: str) -> None:
        for view in config.views:
            file = paths.model_dir(view) / "predictions.npz"
            outputs = read_npz(file)
            noise = rng.dirichlet([0.5, 0.5], size=len(outputs[key])).astype(outputs[key].dtype)
            write_npz(file, **{**outputs, key: noise})

    rewrite("val_proba")  # what the views answer on the validation rows, having early-stopped on them
    fuse_step(config, paths)
    assert json.loads((paths.fused_dir / FUSION_FILE).read_text())["threshold"] == threshold
    rewrite(OUT_OF_FOLD)
    fuse_step(config, paths)
    assert json.loads((paths.fused_dir / FUSION_FILE).read_text())["threshold"] != threshold


def test_a_table_over_the_size_rule_fuses_on_the_validation_split(tmp_path: Path):
    synthetic.generate(600, tmp_path / "table.parquet", seed=1, segments=2, coarse=2, fine_per_coarse=1)
    settings = {**SETTINGS, "split": {"folds": 3, "out_of_fold_rows": 100},
                "views": {"fine-all": SETTINGS["views"]["fine-all"]}, "fusion": {}}
    config, paths = Config.model_validate(settings), ProjectPaths(tmp_path)
    for step in (import_raw_step, clean_step, split_step):
        step(config, paths)
    view_step(config, paths, "fine-all")
    train_step(config, paths, "fine-all", warn=lambda line: None)
    fuse_step(config, paths)
    splits = read_npz(paths.splits)
    assert (splits["fold"][splits["split"] == TRAIN_SPLIT] == -1).all()
    assert OUT_OF_FOLD not in read_npz(paths.model_dir("fine-all") / "predictions.npz")
    assert not (paths.model_dir("fine-all") / FOLDS_FILE).exists()
    choice = json.loads((paths.fused_dir / FUSION_FILE).read_text())
    assert choice["fitted_on"] == {"rows": int((splits["split"] == VAL_SPLIT).sum()), "folds": 3, "out_of_fold": False}
