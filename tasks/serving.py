"""The fused model as an MLflow pyfunc: one model that rebuilds every view and the fusion."""
from __future__ import annotations

import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import granular
import tasks
from granular.predict import FusedClassifier
from tasks.tracking import RunRef

MODEL_PATH = "fused_model"
BACKOFF_THRESHOLD = "backoff_threshold"  # the key in the pyfunc's model_config


class FusedImageClassifier(mlflow.pyfunc.PythonModel):
    """Input: images as an (N, H, W) array of 0..255 pixels (or one row of H*W pixels per image);
    for a model of a table, a DataFrame with its feature columns (values as in the source file).
    Output: the fine label id, the class name at every taxonomy level, the fused probability of
    the label, and the answer at the level the model is sure of (`prediction`,
    `prediction_level`, `prediction_confidence`; see granular.predict.back_off). The back-off
    threshold is part of the model: its `model_config`, set when it was logged."""

    def load_context(self, context) -> None:
        self._classifier = FusedClassifier.load(Path(context.artifacts["bundle"]))
        self._backoff_threshold = (context.model_config or {}).get(BACKOFF_THRESHOLD)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        columns = self._classifier.table_columns
        if columns is not None:
            return pd.DataFrame(self._classifier.predict(_table_rows(model_input, columns), self._backoff_threshold))
        height, width = self._classifier.image_shape
        images = np.asarray(model_input)
        if images.ndim == 2 and images.shape[1] == height * width:
            images = images.reshape(-1, height, width)
        if images.shape[1:] != (height, width):
            raise ValueError(f"expected images of {height}x{width} pixels, got an array of shape {images.shape}")
        return pd.DataFrame(self._classifier.predict(images, self._backoff_threshold))


def _table_rows(model_input, columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(model_input)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"the input lacks the feature column(s) {missing}; the model reads {columns}")
    return frame[columns]


def _requirements() -> list[str]:
    names = ("torch", "numpy", "pandas", "pyyaml", "pydantic", "scipy", "threadpoolctl", "mlflow")
    return [f"{name}=={version(name).split('+')[0]}" for name in names]


def log_fused_model(ref: RunRef, bundle: Path, example_inputs, backoff_threshold: float | None = None) -> str:
    """Save the pyfunc with its code, signature, input example and back-off threshold; log it
    into the run. `example_inputs`: a few images, or a few rows of a table."""
    if isinstance(example_inputs, pd.DataFrame):
        example = example_inputs
    else:
        example = np.ascontiguousarray(example_inputs, dtype=np.uint8)  # (N, H, W)
    output = pd.DataFrame(FusedClassifier.load(bundle).predict(example, backoff_threshold))
    with warnings.catch_warnings():  # the integer output (label ids) is never missing: hint does not apply
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        signature = infer_signature(example, output)
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / MODEL_PATH
        mlflow.pyfunc.save_model(
            path=str(target),
            python_model=FusedImageClassifier(),
            artifacts={"bundle": str(bundle)},
            code_paths=[str(Path(granular.__file__).parent), str(Path(tasks.__file__).parent)],
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
            model_config={BACKOFF_THRESHOLD: backoff_threshold},
        )
        MlflowClient(ref.uri).log_artifacts(ref.run_id, str(target), artifact_path=MODEL_PATH)
    return f"runs:/{ref.run_id}/{MODEL_PATH}"
