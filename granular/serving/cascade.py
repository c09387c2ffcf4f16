"""The cascade as one servable model, rebuilt from its folder (data/cascade/): cascade.json (the
stages, cheapest first, with their fitted thresholds), the fused model's bundle, and the
student's where a stage is the student. Each stage answers the inputs whose top class
probability clears its threshold and passes the rest on; the fused model answers what reaches
it. Answers as the fused model does, plus the stage that gave each answer."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from granular.config import CascadeStage
from granular.config.cascade import FUSED, STUDENT
from granular.core.cascade import NEVER, confidence
from granular.serving.predict import FusedClassifier, class_answers

CASCADE_FILE = "cascade.json"
FUSED_DIR = "fused"  # in the cascade's folder: the fused model's bundle
STUDENT_DIR = "student"  # ... and the student's, where a stage is the student


@dataclass(frozen=True)
class Stage:
    name: str  # as CascadeStage.name: fine-28-no-tta, fused, ...
    # raw inputs -> (N, fine classes) probabilities; the last stage's (the fused model's) also
    # takes `first`, the one passes of its views the cheaper stages ran (FusedClassifier.predict_proba)
    answer: Callable[..., np.ndarray]
    threshold: float = NEVER  # it answers where its confidence reaches this; the last answers all
    one_pass_of: str | None = None  # the fused model's view whose one pass over the inputs it is


def stage_answers(
    spec: CascadeStage, fused: FusedClassifier, student: FusedClassifier | None,
) -> Callable[[Any], np.ndarray]:
    """What a stage runs: the fused model whole; or one view of it (or the student's network),
    at the stage's resolution, with its test-time copies or without."""
    if spec.model == FUSED:
        return fused.predict_proba
    model = student if spec.model == STUDENT else fused
    if model is None:
        raise ValueError(f"stage {spec.name}: the cascade has no student")
    view = model.views[spec.model]
    if view.level != fused.taxonomy.fine:
        raise ValueError(f"stage {spec.name}: view {spec.model} learns {view.level} labels; a stage answers fine ones")
    if spec.resolution is not None:
        view = replace(view, reader=replace(view.reader, resolution=spec.resolution))
    return lambda raw: view.predict(raw, model.runtime, augmented=spec.tta)


def _rows(inputs, index: np.ndarray):
    """Some of the inputs: images by position, or a table's rows."""
    return inputs.iloc[index] if hasattr(inputs, "iloc") else inputs[index]


@dataclass(frozen=True)
class Cascade:
    stages: list[Stage]
    fused: FusedClassifier  # what the answers are read with: its inputs, taxonomy, decision threshold

    @property
    def inputs(self):
        return self.fused.inputs

    def answer(self, inputs) -> tuple[np.ndarray, np.ndarray]:
        """(N, fine classes) probabilities, each from the stage that answered, and (N,) the
        number of that stage. A stage whose threshold is NEVER is not run."""
        count, last = len(inputs), len(self.stages) - 1
        pending = np.arange(count)
        stage = np.full(count, last, dtype=np.int64)
        answered: list[tuple[np.ndarray, np.ndarray]] = []
        one_passes: dict[str, np.ndarray] = {}  # view -> its one pass over every input it ran on
        for number, step in enumerate(self.stages):
            if (number < last and step.threshold == NEVER) or (answered and not len(pending)):
                continue
            some = inputs if len(pending) == count else _rows(inputs, pending)
            if number < last:
                proba = step.answer(some)
            else:  # the fused model, which does not run again the passes it shares with earlier stages
                proba = step.answer(some, first={view: passes[pending] for view, passes in one_passes.items()})
            if step.one_pass_of is not None:
                one_passes[step.one_pass_of] = np.empty((count, proba.shape[1]), dtype=proba.dtype)
                one_passes[step.one_pass_of][pending] = proba
            sure = confidence(proba) >= step.threshold if number < last else np.ones(len(pending), dtype=bool)
            answered.append((pending[sure], proba[sure]))
            stage[pending[sure]] = number
            pending = pending[~sure]
        out = np.empty((count, answered[-1][1].shape[1]), dtype=np.result_type(*(p for _, p in answered)))
        for rows, proba in answered:
            out[rows] = proba
        return out, stage

    def predict_proba(self, inputs) -> np.ndarray:
        return self.answer(inputs)[0]

    def predict(self, inputs, backoff_threshold: float | None = None) -> dict[str, np.ndarray]:
        """The fused model's answers (granular.serving.predict.class_answers), each from the stage
        that gave it, and that stage's name (`stage`)."""
        proba, stage = self.answer(inputs)
        answers = class_answers(proba, self.fused.taxonomy, self.fused.threshold, backoff_threshold)
        return {**answers, "stage": np.asarray([step.name for step in self.stages])[stage]}


def build_cascade(
    specs: list[CascadeStage], thresholds: list[float], fused: FusedClassifier, student: FusedClassifier | None,
) -> Cascade:
    """Stages of `specs` with the thresholds of all but the last."""
    stages = [
        Stage(spec.name, stage_answers(spec, fused, student), threshold, _one_pass_of(spec, fused))
        for spec, threshold in zip(specs, [*thresholds, NEVER])
    ]
    return Cascade(stages, fused)


def _one_pass_of(spec: CascadeStage, fused: FusedClassifier) -> str | None:
    """The fused model's view whose one pass over the inputs `spec` runs, if it is one."""
    one_pass = spec.model in fused.views and not spec.tta and spec.resolution is None
    return spec.model if one_pass else None


def load_cascade(folder: Path) -> Cascade:
    folder = Path(folder)
    record = json.loads((folder / CASCADE_FILE).read_text())
    specs = [CascadeStage.model_validate(stage["spec"]) for stage in record["stages"]]
    thresholds = [NEVER if stage["threshold"] is None else stage["threshold"] for stage in record["stages"][:-1]]
    fused = FusedClassifier.load(folder / FUSED_DIR)
    student = FusedClassifier.load(folder / STUDENT_DIR) if (folder / STUDENT_DIR).is_dir() else None
    return build_cascade(specs, thresholds, fused, student)
