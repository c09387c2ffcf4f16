"""The fused model as an MLflow pyfunc: one model that rebuilds every view and the fusion from
its bundle. The served model ships this package alone as its code."""
from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from granular.serving.predict import load_fused

BACKOFF_THRESHOLD = "backoff_threshold"  # the key in the pyfunc's model_config


class FusedModel(mlflow.pyfunc.PythonModel):
    """Input: images as an (N, H, W) array of 0..255 pixels (or one row of H*W pixels per image);
    for a model of a table, a DataFrame with its feature columns (values as in the source file).
    Output: the fine label id, the class name at every taxonomy level, the fused probability of
    the label, and the answer at the level the model is sure of (`prediction`,
    `prediction_level`, `prediction_confidence`; see granular.serving.predict.back_off). The
    back-off threshold is part of the model: its `model_config`, set when it was logged. A
    model of a regression target answers the value (`prediction`) and its bin at every binned
    level."""

    def load_context(self, context) -> None:
        self._model = load_fused(Path(context.artifacts["bundle"]))
        self._backoff_threshold = (context.model_config or {}).get(BACKOFF_THRESHOLD)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        inputs = self._model.inputs.parse(model_input)
        return pd.DataFrame(self._model.predict(inputs, self._backoff_threshold))
