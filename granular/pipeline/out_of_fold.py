"""A view of a small table trained again on folds of its training and validation rows, so that
the fusion is fitted on every one of those rows (split.out_of_fold_rows): fold f's model learns
the other folds (stopping early on fold f, as AutoGluon's bagged models do) and answers fold f.
The view's own model, trained on the training split, is the one that serves; the fold models
only answer, and their mean on the test split is kept to compare with it."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from granular.modalities.base import TrainingData
from granular.modalities.experts import ExpertPlan, FitNetwork, fit_experts, predict_routed


@dataclass(frozen=True)
class FoldOutputs:
    fitting: np.ndarray  # each training then validation row's output from the fold model that did not learn it
    test: np.ndarray  # the fold models' mean output on the test split
    records: list[dict]  # per fold: the rows it learned and answered, its seconds


def _joined(data: TrainingData) -> tuple:
    """The training rows then the validation rows: inputs, targets, routes and learnable rows."""
    plan = data.plan
    learnable = None if plan.learnable is None else np.concatenate([plan.learnable["train"], plan.learnable["val"]])
    return (data.x["train"].followed_by(data.x["val"]), np.concatenate([data.y["train"], data.y["val"]]),
            np.concatenate([plan.route["train"], plan.route["val"]]), learnable)


def _fold_plan(plan: ExpertPlan, route: np.ndarray, learnable: np.ndarray | None, held: np.ndarray) -> ExpertPlan:
    """The view's plan over fold f's learning rows (train) and its held-out rows (val)."""
    return replace(
        plan, route={"train": route[~held], "val": route[held]},
        learnable=None if learnable is None else {"train": learnable[~held], "val": learnable[held]},
    )


def train_out_of_fold(
    data: TrainingData, fold: np.ndarray, fitter: Callable[[int], FitNetwork], runtime,
    on_fold: Callable[[dict], None] | None = None,
) -> FoldOutputs:
    """Train the view's networks (its experts too) once per fold of `fold` (each training then
    validation row's fold, as reads.fitting_rows gives them), with `fitter(f)`'s fit_network."""
    x, y, route, learnable = _joined(data)
    if len(fold) != len(y):
        raise ValueError(f"{len(fold)} rows have folds, but the view has {len(y)} training and validation rows")
    folds = int(fold.max()) + 1
    fitting, test, records = None, None, []
    for f in range(folds):
        held = fold == f
        plan = _fold_plan(data.plan, route, learnable, held)
        for number, tag in enumerate(plan.tags):
            if not plan.rows("train", number).any():
                raise ValueError(
                    f"fold {f}: network {number} {tag or ''} has no rows to learn outside the fold: raise the "
                    "view's segments.min_size, or split.out_of_fold_rows: 0 to fuse on the validation split"
                )
        started = time.perf_counter()
        networks, _, _ = fit_experts({"train": x[~held], "val": x[held]}, {"train": y[~held], "val": y[held]}, plan, fitter(f))
        answered = predict_routed(networks, route[held], x[held], runtime)
        test_outputs = predict_routed(networks, data.plan.route["test"], data.x["test"], runtime)
        if fitting is None:
            fitting, test = np.zeros((len(y), answered.shape[1]), answered.dtype), np.zeros_like(test_outputs)
        fitting[held] = answered
        test += test_outputs / folds
        records.append({"fold": f, "folds": folds, "learned": int((~held).sum()), "answered": int(held.sum()),
                        "seconds": time.perf_counter() - started})
        if on_fold is not None:
            on_fold(records[-1])
    return FoldOutputs(fitting=fitting, test=test, records=records)
