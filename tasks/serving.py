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
from mlflow.types.schema import AnyType, ColSpec, Schema

import granular
from granular.serving.predict import load_fused
from granular.serving.pyfunc import BACKOFF_THRESHOLD, FusedModel
from tasks.tracking import RunRef

MODEL_PATH = "fused_model"


def _requirements() -> list[str]:
    names = ("torch", "numpy", "pandas", "pyyaml", "pydantic", "scipy", "threadpoolctl", "mlflow")
    return [f"{name}=={version(name).split('+')[0]}" for name in names]


def _columns_of_any_type(signature: ModelSignature) -> ModelSignature:
    """A table's column takes what `pandas.read_csv` makes of it: int64 for a numeric column of
    whole numbers (JSON to `mlflow models serve` gives ints too), which MLflow would refuse for a
    column it inferred as double; float64 for a categorical column of numbers (codes such as
    1 and 2), which MLflow would refuse for a string column. The model's encoder casts what it
    gets, as it did in training (a number to a float, a category to its text). Images, one
    tensor, keep their inferred schema."""
    if not signature.inputs.has_input_names():
        return signature
    columns = [ColSpec(AnyType(), spec.name, required=spec.required) for spec in signature.inputs.inputs]
    return ModelSignature(inputs=Schema(columns), outputs=signature.outputs)


def log_fused_model(ref: RunRef, bundle: Path, example_inputs, backoff_threshold: float | None = None) -> str:
    """Save the pyfunc with its code, signature, input example and back-off threshold; log it
    into the run. `example_inputs`: a few raw inputs (images, or rows of a table)."""
    model = load_fused(bundle)
    example = model.inputs.example(example_inputs)
    output = pd.DataFrame(model.predict(example, backoff_threshold))
    with warnings.catch_warnings():  # the integer output (label ids) is never missing: hint does not apply
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        signature = _columns_of_any_type(infer_signature(example, output))
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
