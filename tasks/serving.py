"""Logging the served model into an MLflow run as a Logged Model: MLflow "models from code"
(granular/serving/model_code.py) with the run's folder (the cascade, or the fused model's
bundle) as its artifact."""
from __future__ import annotations

import warnings
from importlib.metadata import version
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, ColSpec, Schema

import granular
from granular.serving import model_code
from granular.serving.served import load_served
from tasks.tracking import RunRef, using_tracking_uri

MODEL_NAME = "model"  # the Logged Model's name, on the run's page and in the experiment's Models tab


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


def log_served_model(ref: RunRef, folder: Path, example_inputs, backoff_threshold: float | None = None) -> str:
    """Log the model `folder` holds (see granular.serving.served) into the run `ref` as the
    Logged Model MODEL_NAME, with its code, signature, input example and back-off threshold;
    return its URI, `models:/<model_id>`. `example_inputs`: a few raw inputs (images, or rows
    of a table)."""
    model = load_served(folder)
    example = model.inputs.example(example_inputs)
    output = pd.DataFrame(model.predict(example, backoff_threshold))
    with warnings.catch_warnings():  # the integer output (label ids) is never missing: hint does not apply
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        signature = _columns_of_any_type(infer_signature(example, output))
    # Created here in the run's experiment, with the run's parameters as MLflow gives them: MLflow
    # would file it under the fluent API's active experiment, which the flow never sets.
    client = MlflowClient(ref.uri)
    logged = client.create_logged_model(
        ref.experiment_id, name=MODEL_NAME, source_run_id=ref.run_id, params=client.get_run(ref.run_id).data.params
    )
    # mlflow.pyfunc.log_model is this call without `run_id`, which it takes from the fluent API's
    # active run; the flow has none, and starting one would mark the run FINISHED when left.
    with using_tracking_uri(ref.uri):
        info = Model.log(
            artifact_path=None,  # required, and deprecated for `name`
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=ref.run_id,
            model_id=logged.model_id,
            python_model=model_code.__file__,
            artifacts={model_code.MODEL_ARTIFACT: str(folder)},
            code_paths=[str(Path(granular.__file__).parent)],  # the domain package alone
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
            model_config={model_code.BACKOFF_THRESHOLD: backoff_threshold},
        )
    return info.model_uri
