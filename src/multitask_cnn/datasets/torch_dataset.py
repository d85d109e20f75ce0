"""A symmetric ``torch.save`` / ``torch.load`` dataset for tensors and state dicts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError


class TorchDataset(AbstractDataset[Any, Any]):
    """Save and load tensors, dicts of tensors, or checkpoints as one ``.pt`` file.

    Loads with ``weights_only=True`` (no arbitrary code), onto the CPU. Saves go to a
    temporary file that replaces the target only once complete, so an interrupted
    save never leaves a half-written file behind.

    Example (``catalog.yml``)::

        model_input_train:
          type: multitask_cnn.datasets.TorchDataset
          filepath: data/05_model_input/train.pt
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> Any:
        path = Path(self._filepath)
        if not path.is_file():
            raise DatasetError(f"{path}: no such file; run the pipeline that writes it first")
        return torch.load(path, map_location="cpu", weights_only=True)

    def save(self, data: Any) -> None:
        path = Path(self._filepath)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        try:
            torch.save(data, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
