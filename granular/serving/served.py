"""The model a run serves, from its folder: the cascade (data/cascade/) where the run built one,
else the fused model's bundle (data/fused/, data/student/)."""
from __future__ import annotations

from pathlib import Path

from granular.serving.bundle import FUSION_FILE
from granular.serving.cascade import CASCADE_FILE, Cascade, load_cascade
from granular.serving.predict import FusedClassifier, FusedRegressor, load_fused


def holds_a_model(folder: Path) -> bool:
    """Is `folder` a model's folder (data/cascade, data/fused, data/student), rather than a URI?"""
    return any((Path(folder) / name).is_file() for name in (CASCADE_FILE, FUSION_FILE))


def load_served(folder: Path) -> Cascade | FusedClassifier | FusedRegressor:
    """What `folder` holds, ready to answer: `.inputs` parses a request, `.predict(inputs,
    backoff_threshold)` answers it as a dict of columns."""
    folder = Path(folder)
    return load_cascade(folder) if (folder / CASCADE_FILE).is_file() else load_fused(folder)
