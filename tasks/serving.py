"""Logging the fused model into an MLflow run as a pyfunc (granular/serving/pyfunc.py)."""
from __future__ import annotations

import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import granular
from granular.serving.predict import FusedClassifier
from granular.serving.pyfunc import BACKOFF_THRESHOLD, FusedModel
from tasks.tracking import RunRef

MODEL_PATH = "fused_model"


def _requirements() -> list[str]:
    names = ("torch", "numpy", "pandas", "pyyaml", "pydantic", "scipy", "threadpoolctl", "mlflow")
    return [f"{name}=={version(name).split('+')[0]}" for name in names]


def log_fused_model(ref: RunRef, bundle: Path, example_inputs, backoff_threshold: float | None = None) -> str:
    """Save the pyfunc with its code, signature, input example and back-off threshold; log it
    into the run. `example_inputs`: a few raw inputs (images, or rows of a table)."""
    classifier = FusedClassifier.load(bundle)
    example = classifier.inputs.example(example_inputs)
    output = pd.DataFrame(classifier.predict(example, backoff_threshold))
    with warnings.catch_warnings():  # the integer output (label ids) is never missing: hint does not apply
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        signature = infer_signature(example, output)
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / MODEL_PATH
        mlflow.pyfunc.save_model(
            path=str(target),
            python_model=FusedModel(),
            artifacts={"bundle": str(bundle)},
            code_paths=[str(Path(granular.__file__).parent)],  # the domain package alone
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
            model_config={BACKOFF_THRESHOLD: backoff_threshold},
        )
        MlflowClient(ref.uri).log_artifacts(ref.run_id, str(target), artifact_path=MODEL_PATH)
    return f"runs:/{ref.run_id}/{MODEL_PATH}"
