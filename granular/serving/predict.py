"""The fused model as one object, rebuilt from its bundle (granular/serving/bundle.py): raw
images (or a table's rows) in, fine label with its ancestors out; for a regression target, the
predicted value with its bins."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from granular.core import value_fusion
from granular.core.bins import bin_ids, bin_names
from granular.core.fusion import Fuser, restore_fusion
from granular.core.taxonomy import Taxonomy, load_taxonomy
from granular.core.threshold import apply_threshold
from granular.modalities import load_input_spec, load_view_model
from granular.modalities.base import InputSpec
from granular.modalities.experts import ViewModel
from granular.problems import CLASSES, VALUES, problem_of
from granular.serving.bundle import FUSION_FILE, INPUT_FILE, TAXONOMY_FILE, VIEWS_DIR


@dataclass(frozen=True)
class _BundleParts:
    inputs: InputSpec
    taxonomy: Taxonomy
    views: dict[str, ViewModel]
    record: dict  # the fusion record
    runtime: object

    @classmethod
    def read(cls, bundle: Path) -> "_BundleParts":
        from granular.nn.device import select_runtime  # torch is imported only on load

        bundle = Path(bundle)
        runtime = select_runtime()
        views = {folder.name: load_view_model(folder, runtime) for folder in sorted((bundle / VIEWS_DIR).glob("*/"))}
        if not views:
            raise FileNotFoundError(f"{bundle}: no view checkpoints under {VIEWS_DIR}/")
        return cls(
            inputs=load_input_spec(json.loads((bundle / INPUT_FILE).read_text())),
            taxonomy=load_taxonomy(bundle / TAXONOMY_FILE), views=views,
            record=json.loads((bundle / FUSION_FILE).read_text()), runtime=runtime,
        )


def load_fused(bundle: Path) -> "FusedClassifier | FusedRegressor":
    """The fused model of a bundle, of the problem its fusion record was made by: a classifier,
    or a regressor where its fusion stacks values."""
    record = json.loads((Path(bundle) / FUSION_FILE).read_text())
    return FUSED_MODELS[problem_of(record)].load(bundle)


@dataclass(frozen=True)
class FusedClassifier:
    inputs: InputSpec  # what the model reads: images of a shape, or a table's columns
    taxonomy: Taxonomy
    views: dict[str, ViewModel]
    fuser: Fuser
    runtime: object
    threshold: dict | None = None  # a target of two classes: the decision cut (granular/core/threshold.py)

    @classmethod
    def load(cls, bundle: Path) -> "FusedClassifier":
        parts = _BundleParts.read(bundle)
        parents = {name: parts.taxonomy.parent[view.level] for name, view in parts.views.items()}
        return cls(
            inputs=parts.inputs, taxonomy=parts.taxonomy, views=parts.views, fuser=restore_fusion(parts.record, parents),
            runtime=parts.runtime, threshold=parts.record.get("threshold"),
        )

    def predict_proba(self, inputs, shifted: bool = True, first: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """(N, H, W) images with pixels in 0..255, or a DataFrame of a table's rows ->
        (N, fine classes) fused probabilities. Not `shifted`: the views skip their shifted
        test-time copies (a third of the cost, for a pass over many images such as distillation's).
        `first`: view -> its class probabilities of one pass over these inputs, computed already
        (by a cheaper stage of a cascade), which the view does not run again."""
        first = first or {}
        probas = {
            name: view.predict(inputs, self.runtime, shifted, first=first.get(name)) for name, view in self.views.items()
        }
        return self.fuser.predict_proba(probas)

    def predict(self, inputs, backoff_threshold: float | None = None) -> dict[str, np.ndarray]:
        """The answers of `class_answers` to the fused probabilities."""
        return class_answers(self.predict_proba(inputs), self.taxonomy, self.threshold, backoff_threshold)


def class_answers(
    proba: np.ndarray, taxonomy: Taxonomy, threshold: dict | None, backoff_threshold: float | None
) -> dict[str, np.ndarray]:
    """Fine label id (the most probable, or by the decision `threshold` of a target of two
    classes), the class name at every level, the probability of the label, the answer backed off
    to a coarser level where the fine one is unsure (see `back_off`), and the probability of
    every fine class (`proba_<class>`)."""
    label = apply_threshold(proba, threshold)
    out = {"label": label, "confidence": proba[np.arange(len(label)), label]}
    for level in taxonomy.levels:
        out[level] = np.asarray(taxonomy.names[level])[taxonomy.map_labels(label, level)]
    every_class = {f"proba_{name}": proba[:, k] for k, name in enumerate(taxonomy.names[taxonomy.fine])}
    return {**out, **back_off(proba, taxonomy, backoff_threshold), **every_class}


def level_proba(proba: np.ndarray, taxonomy: Taxonomy, level: str) -> np.ndarray:
    """(N, fine classes) -> (N, classes at `level`): each class gets the summed probability of
    the fine classes under it."""
    membership = np.eye(taxonomy.num_classes(level))[taxonomy.parent[level]]  # (fine, classes at level)
    return proba @ membership


def back_off(proba: np.ndarray, taxonomy: Taxonomy, threshold: float | None) -> dict[str, np.ndarray]:
    """The answer for each example at the finest level whose most probable class reaches
    `threshold` (the coarsest level when none does): `prediction` (the class name),
    `prediction_level` and `prediction_confidence`. None: every answer is the fine label."""
    rows = len(proba)
    prediction = np.empty(rows, dtype=object)
    level_answered = np.empty(rows, dtype=object)
    confidence = np.zeros(rows)
    pending = np.ones(rows, dtype=bool)
    for level in taxonomy.levels:
        summed = level_proba(proba, taxonomy, level)
        best = summed.argmax(axis=1)
        best_proba = summed[np.arange(rows), best]
        sure = best_proba >= threshold if threshold is not None else np.ones(rows, dtype=bool)
        take = pending & (sure | (level == taxonomy.levels[-1]))
        prediction[take] = np.asarray(taxonomy.names[level])[best[take]]
        level_answered[take] = level
        confidence[take] = best_proba[take]
        pending &= ~take
    return {
        "prediction": prediction.astype(str),
        "prediction_level": level_answered.astype(str),
        "prediction_confidence": confidence,
    }


@dataclass(frozen=True)
class FusedRegressor:
    """A regression target's fused model: each view's value (or the value its bin probabilities
    imply), stacked (granular/core/value_fusion.py)."""

    inputs: InputSpec
    views: dict[str, ViewModel]
    record: dict  # the stacking's weights and intercept (and the bin means of a bin view)
    runtime: object
    bins: dict[str, list[float]]  # binned level -> its cut points, to name each value's bins

    @classmethod
    def load(cls, bundle: Path) -> "FusedRegressor":
        parts = _BundleParts.read(bundle)
        return cls(
            inputs=parts.inputs, views=parts.views, record=parts.record, runtime=parts.runtime,
            bins=parts.record.get("bins", {}),
        )

    def predict_values(self, inputs) -> np.ndarray:
        """A DataFrame of a table's rows -> (N,) fused values."""
        outputs = {name: self.views[name].predict(inputs, self.runtime) for name in self.record["weights"]}
        return value_fusion.predict(self.record, value_fusion.input_values(outputs, self.record.get("bin_means", {})))

    def predict(self, inputs, backoff_threshold: float | None = None) -> dict[str, np.ndarray]:
        """The fused value (`prediction`) and the bin it falls in at every binned level."""
        if backoff_threshold is not None:
            raise ValueError("serving.backoff_threshold backs off between class levels; a regression has none")
        values = self.predict_values(inputs)
        out = {"prediction": values}
        for level, cuts in self.bins.items():
            out[level] = np.asarray(bin_names(cuts))[bin_ids(values, cuts)]
        return out


FUSED_MODELS = {CLASSES: FusedClassifier, VALUES: FusedRegressor}  # each problem's fused model, as it serves
