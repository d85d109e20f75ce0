"""The multi-task model as an MLflow model: raw images in, one column per task out.

:func:`log_multitask_model` logs a checkpoint with MLflow's models-from-code
(``model_code.py`` is the model's code; the checkpoint is an artifact read with
``weights_only=True``, so loading the model unpickles nothing), registers it and gives
the new version an alias. ``mlflow.pyfunc.load_model("models:/<name>@candidate")`` and
``mlflow models serve`` then answer with the evaluation pipeline's predictions.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient

from multitask_cnn.evaluation.inference import Predictor
from multitask_cnn.models.checkpoint import load_weights_only

__all__ = ["MODEL_CODE", "MultiTaskPyfunc", "answer", "log_multitask_model"]

MODEL_CODE = Path(__file__).with_name("model_code.py")


def answer(
    predictor: Predictor,
    images: Any,
    source: str | None = None,
    probabilities: bool = False,
) -> pd.DataFrame:
    """One row per image, one column per task: the class name for a classifier, the
    value (in the label's units) for regression. With ``probabilities``, each
    classifier also gets a column per class, ``<task>.p.<class name>``."""
    values, probs = predictor.predict_with_probabilities(images, source)
    columns: dict[str, Any] = {}
    for task, answers in values.items():
        names = predictor.class_names(task)
        columns[task] = ([names[int(v)] for v in answers] if names is not None
                         else answers.astype(np.float64))  # fmt: skip
    if probabilities:
        for task, table in probs.items():
            for name, column in zip(predictor.class_names(task), table.T, strict=True):
                columns[f"{task}.p.{name}"] = column.astype(np.float64)
    return pd.DataFrame(columns)


class MultiTaskPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow's face of :class:`Predictor`; ``params={"source": ...}`` picks the
    source the images come from when the tasks read several, and
    ``params={"probabilities": True}`` adds each classifier's class probabilities."""

    def load_context(self, context) -> None:
        self._predictor = Predictor(load_weights_only(context.artifacts["checkpoint"]))

    def predict(self, context, model_input, params=None):  # noqa: ARG002 - MLflow's API
        params = params or {}
        source = params.get("source") or None  # "": the first task's source
        return answer(self._predictor, np.asarray(model_input), source,
                      probabilities=bool(params.get("probabilities", False)))  # fmt: skip


def log_multitask_model(
    checkpoint: dict[str, Any],
    input_example: np.ndarray,
    registered_model_name: str | None = None,
    alias: str | None = "candidate",
    name: str = "multitask_model",
) -> ModelInfo:
    """Log ``checkpoint`` into the active MLflow run as a pyfunc model (with a
    signature and ``input_example``: uint8 images ``(N, C, H, W)``), register it under
    ``registered_model_name`` (None: not registered) and point ``alias`` at the new
    version."""
    output = answer(Predictor(checkpoint), input_example)
    signature = infer_signature(
        input_example, output, params={"source": "", "probabilities": False}
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.pt"
        torch.save(checkpoint, path)
        info = mlflow.pyfunc.log_model(
            name=name, python_model=str(MODEL_CODE), artifacts={"checkpoint": str(path)},
            signature=signature, input_example=input_example,
            registered_model_name=registered_model_name,
        )  # fmt: skip
    if registered_model_name and alias:
        MlflowClient().set_registered_model_alias(
            registered_model_name, alias, info.registered_model_version
        )
    return info
