"""Logging the fused model into an MLflow run as a pyfunc (granular/serving/pyfunc.py)."""
from __future__ import annotations

import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

import granular
from granular.serving.predict import load_fused
from granular.serving.pyfunc import BACKOFF_THRESHOLD, FusedModel
from tasks.tracking import RunRef

MODEL_PATH = "fused_model"


def _requirements() -> list[str]:
    names = ("torch", "numpy", "pandas", "pyyaml", "pydantic", "scipy", "threadpoolctl", "mlflow")
    return [f"{name}=={version(name).split('+')[0]}" for name in names]


NUMBERS = (DataType.integer, DataType.long, DataType.float, DataType.double)


def _numbers_of_any_width(signature: ModelSignature) -> ModelSignature:
    """A table's numeric column takes integers or floats: `pandas.read_csv` gives int64 to a
    column of whole numbers (and JSON to `mlflow models serve` gives ints), which MLflow would
    refuse for a column it inferred as double; the model's encoder casts what it gets. Images,
    one tensor, keep their inferred schema."""
    if not signature.inputs.has_input_names():
        return signature
    columns = [
        ColSpec(AnyType(), spec.name, required=spec.required) if spec.type in NUMBERS else spec
        for spec in signature.inputs.inputs
    ]
    return ModelSignature(inputs=Schema(columns), outputs=signature.outputs)


def log_fused_model(ref: RunRef, bundle: Path, example_inputs, backoff_threshold: float | None = None) -> str:
    """Save the pyfunc with its code, signature, input example and back-off threshold; log it
    into the run. `example_inputs`: a few raw inputs (images, or rows of a table)."""
    model = load_fused(bundle)
    example = model.inputs.example(example_inputs)
    output = pd.DataFrame(model.predict(example, backoff_threshold))
    with warnings.catch_warnings():  # the integer output (label ids) is never missing: hint does not apply
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        signature = _numbers_of_any_width(infer_signature(example, output))
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
