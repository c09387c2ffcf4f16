"""The model a run serves, from its folder: the cascade (data/cascade/) where the run built one,
else the fused model's bundle (data/fused/, data/student/)."""
from __future__ import annotations

from pathlib import Path

from granular.serving.cascade import CASCADE_FILE, Cascade, load_cascade
from granular.serving.predict import FusedClassifier, FusedRegressor, load_fused


def load_served(folder: Path) -> Cascade | FusedClassifier | FusedRegressor:
    """What `folder` holds, ready to answer: `.inputs` parses a request, `.predict(inputs,
    backoff_threshold)` answers it as a dict of columns."""
    folder = Path(folder)
    return load_cascade(folder) if (folder / CASCADE_FILE).is_file() else load_fused(folder)
