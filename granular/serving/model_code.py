"""The served model as MLflow "models from code": MLflow runs this file to rebuild the model from
its `model` artifact, a run's folder (the cascade, or the fused model's bundle); nothing pickled.
The served model ships this package alone as its code."""
from __future__ import annotations

from pathlib import Path

import mlflow.models
import mlflow.pyfunc
import pandas as pd

from granular.serving.served import load_served

MODEL_ARTIFACT = "model"  # the key of the served folder in the pyfunc's artifacts
BACKOFF_THRESHOLD = "backoff_threshold"  # the key in the pyfunc's model_config


class ServedModel(mlflow.pyfunc.PythonModel):
    """Input: images as an (N, H, W) array of 0..255 pixels (or one row of H*W pixels per image);
    for a model of a table, a DataFrame with its feature columns (values as in the source file).
    Output: the fine label id, the class name at every taxonomy level, the fused probability of
    the label, and the answer at the level the model is sure of (`prediction`,
    `prediction_level`, `prediction_confidence`; see granular.serving.predict.back_off); a
    cascade's answer also has a `stage` column naming the stage that answered. The back-off
    threshold is part of the model: its `model_config`, set when it was logged. A model of a
    regression target answers the value (`prediction`) and its bin at every binned level."""

    def load_context(self, context) -> None:
        self._model = load_served(Path(context.artifacts[MODEL_ARTIFACT]))
        self._backoff_threshold = (context.model_config or {}).get(BACKOFF_THRESHOLD)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        inputs = self._model.inputs.parse(model_input)
        return pd.DataFrame(self._model.predict(inputs, self._backoff_threshold))


mlflow.models.set_model(ServedModel())
