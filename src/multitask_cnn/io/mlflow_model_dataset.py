"""Logs the multi-task model into the active MLflow run (kedro-mlflow's) as a pyfunc
model, registered and given an alias (``multitask_cnn.serving``)."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from kedro.io import AbstractDataset, DatasetError

logger = logging.getLogger(__name__)


class MultiTaskModelDataset(AbstractDataset[dict[str, Any], NoReturn]):
    """Write-only: ``save`` takes the ``package_model`` node's output (the checkpoint,
    an input example, the registered name and alias; ``log: false`` logs nothing).
    Load the model with ``mlflow.pyfunc.load_model("models:/<name>@<alias>")``."""

    def save(self, data: dict[str, Any]) -> None:
        if not data["log"]:
            logger.info(
                "The model is not logged to MLflow (evaluation.log_model: false)"
            )
            return
        # imported here: importing the io package (the run lock, a dataset) does not
        # load MLflow's pyfunc machinery
        from multitask_cnn.serving import log_multitask_model

        info = log_multitask_model(data["checkpoint"], data["input_example"],
                                   data["registered_model_name"], data["alias"])  # fmt: skip
        if data["registered_model_name"]:
            logger.info("Registered %s version %s%s", data["registered_model_name"],
                        info.registered_model_version,
                        f" as @{data['alias']}" if data["alias"] else "")  # fmt: skip

    def load(self) -> NoReturn:
        raise DatasetError(
            "multitask_model is write-only: load it with "
            "mlflow.pyfunc.load_model('models:/<name>@<alias>')"
        )

    def _describe(self) -> dict[str, Any]:
        return {}
