"""Permutation importance (granular/core/importance.py): the shuffled copies of many columns
scored by one predict call give the numbers a call per shuffle gives; a wide table's columns
capped by a sample drawn from the seed, which importance.json records; progress heard as the
columns are done, and logged by the evaluate step."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from granular.config import Config
from granular.core.importance import ImportanceScores, columns_to_score, permutation_importance
from granular.core.taxonomy import Taxonomy
from granular.pipeline.evaluate import _feature_importance
from granular.problems.classes import CLASSES

SCORES = CLASSES.importance


def _table(rows: int = 40, numeric: int = 6, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Numeric columns (one with a missing value) and a text column (read as a table is read:
    float64 and string), and a two-class label that rests on x0, x1 and the text."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.standard_normal((rows, numeric)), columns=[f"x{k}" for k in range(numeric)])
    frame.loc[3, "x2"] = np.nan
    frame["colour"] = pd.array(rng.choice(["red", "blue", None], size=rows), dtype="string")
    y = ((frame["x0"] + frame["x1"] + (frame["colour"] == "red").fillna(False).astype(float)) > 0.5).to_numpy().astype(int)
    return frame, y


class _Model:
    """A row-by-row model of the table's columns that counts its calls and the rows it reads."""

    def __init__(self):
        self.calls, self.rows = 0, []

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        self.calls += 1
        self.rows.append(len(frame))
        red = (frame["colour"].astype("string") == "red").fillna(False).to_numpy(dtype=float)
        logit = 2 * frame["x0"].to_numpy() + frame["x1"].fillna(0).to_numpy() + 0.5 * np.nan_to_num(frame["x2"].to_numpy()) + red
        p = 1 / (1 + np.exp(-logit))
        return np.stack([1 - p, p], axis=1)


def _one_call_per_shuffle(predict, frame, y, columns, scores: ImportanceScores, repeats: int, seed: int) -> list[dict]:
    """Permutation importance as it is defined: each shuffled copy scored alone, the shuffles
    drawn column by column."""
    headline, loss = scores.measure(predict(frame), y)
    rng = np.random.default_rng(seed)
    table = []
    for column in columns:
        falls, rises = [], []
        for _ in range(repeats):
            shuffled = frame.copy()
            shuffled[column] = frame[column].to_numpy()[rng.permutation(len(frame))]
            changed_headline, changed_loss = scores.measure(predict(shuffled), y)
            falls.append(headline - changed_headline)
            rises.append(changed_loss - loss)
        table.append({"column": column, scores.drop: float(np.mean(falls)), f"{scores.drop}_std": float(np.std(falls)),
                      scores.rise: float(np.mean(rises))})
    return sorted(table, key=lambda row: -row[scores.rise])


@pytest.mark.parametrize("batch_values", [1, 700, 10_000, 1 << 22])  # a copy a call, a few, most, all at once
def test_stacked_copies_give_the_numbers_of_one_call_per_shuffle(batch_values):
    frame, y = _table()
    columns = list(frame.columns)
    expected = _one_call_per_shuffle(_Model(), frame, y, columns, SCORES, repeats=3, seed=7)
    model = _Model()
    got = permutation_importance(model, frame, y, columns, SCORES, repeats=3, seed=7, batch_values=batch_values)
    assert got == expected
    copies = len(columns) * 3
    per_call = max(1, batch_values // frame.size)
    assert model.calls == 1 + -(-copies // per_call)  # the unshuffled frame, then the stacks
    assert max(model.rows[1:]) == min(per_call, copies) * len(frame)


def test_a_column_the_model_rests_on_ranks_first():
    frame, y = _table(rows=200)
    ranked = permutation_importance(_Model(), frame, y, list(frame.columns), SCORES, repeats=2, seed=0)
    assert ranked[0]["column"] == "x0"
    assert {row["column"]: row["log_loss_rise"] for row in ranked}["x5"] == 0.0  # never read


def test_progress_is_heard_after_each_call_up_to_every_column():
    frame, y = _table()
    heard = []
    permutation_importance(_Model(), frame, y, list(frame.columns), SCORES, repeats=3, seed=0,
                           batch_values=2 * frame.size, progress=lambda done, total: heard.append((done, total)))
    assert heard == [(done, 7) for done in (0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7)]  # 2 of 21 shuffles a call


def test_needs_rows():
    frame, y = _table()
    with pytest.raises(ValueError, match="permutation importance needs rows"):
        permutation_importance(_Model(), frame.iloc[:0], y[:0], ["x0"], SCORES)


def test_columns_beyond_the_cap_are_a_sample_drawn_from_the_seed_in_table_order():
    columns = [f"c{k:03d}" for k in range(754)]
    assert columns_to_score(columns, 1000, seed=0) == columns
    assert columns_to_score(columns, 754, seed=0) == columns
    sample = columns_to_score(columns, 50, seed=0)
    assert len(sample) == len(set(sample)) == 50 and set(sample) <= set(columns)
    assert sample == sorted(sample)
    assert columns_to_score(columns, 50, seed=0) == sample
    assert columns_to_score(columns, 50, seed=1) != sample
    assert columns_to_score(columns, 0, seed=0) == []


class _Served:
    """A table's view and fused model as the evaluate step loads them, both `_Model`."""

    def __init__(self, columns: list[str]):
        self.reader = SimpleNamespace(columns_read=lambda: list(columns))
        self.inputs = SimpleNamespace(columns=list(columns))
        self.model = _Model()

    def predict(self, frame: pd.DataFrame, runtime) -> np.ndarray:
        return self.model(frame)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model(frame)


def _importance(max_columns: int) -> dict:
    frame, y = _table()
    config = Config.model_validate({
        "data": {"source": {"format": "csv", "path": "table.csv"}, "table": {"target": "label"}}, "taxonomy": None,
        "views": {"fine-all": {"level": "fine", "features": "all"}}, "importance": {"max_columns": max_columns},
    })
    taxonomy = Taxonomy(levels=("fine",), names={"fine": ("no", "yes")}, parent={"fine": np.arange(2)})
    served = {"runtime": None, "views": {"fine-all": _Served(list(frame.columns))}, "fused": _Served(list(frame.columns))}
    return _feature_importance(config, taxonomy, served, frame, y)


def test_a_model_reading_more_than_max_columns_has_a_sample_scored_and_says_so(caplog):
    caplog.set_level(logging.INFO, logger="granular")
    record = _importance(max_columns=3)
    assert (record["rows"], record["repeats"], record["max_columns"]) == (40, 3, 3)
    sample = columns_to_score([*(f"x{k}" for k in range(6)), "colour"], 3, seed=0)  # split.seed
    for name in ("fine-all", "fused"):
        model = record["models"][name]
        assert (model["columns_read"], model["columns_scored"], model["capped"]) == (7, 3, True)
        assert sorted(row["column"] for row in model["scores"]) == sorted(sample)
    lines = [r.getMessage() for r in caplog.records if r.name == "granular.pipeline.evaluate"]
    assert "importance: fine-all reads 7 columns; scoring a random sample of 3 (importance.max_columns)" in lines
    assert any(line.startswith("importance: fused 3/3 columns, ") for line in lines)


def test_every_column_is_scored_under_the_cap():
    model = _importance(max_columns=7)["models"]["fused"]
    assert (model["columns_scored"], model["capped"]) == (7, False)
    assert {row["column"] for row in model["scores"]} == {*(f"x{k}" for k in range(6)), "colour"}
