"""A symmetric ``torch.save`` / ``torch.load`` dataset for tensors and state dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .atomic import AtomicFileDataset


class TorchDataset(AtomicFileDataset[Any, Any]):
    """Save and load tensors, dicts of tensors, or checkpoints as one ``.pt`` file.

    Loads with ``weights_only=True`` (no arbitrary code), onto the CPU. Saves are
    atomic (see ``atomic_path``): an interrupted save never leaves a half-written file.

    Example (``catalog.yml``)::

        model_input_train:
          type: multitask_cnn.io.TorchDataset
          filepath: data/05_model_input/train.pt

    With ``missing_ok: true`` loading a file that does not exist yet gives ``None``
    (a node's earlier output that it may reuse, such as trained baselines).
    """

    def __init__(
        self,
        filepath: str,
        *,
        missing_ok: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath, metadata=metadata)
        self._missing_ok = missing_ok  # load gives None when the file is not there yet

    def load(self) -> Any:
        if self._missing_ok and not self._exists():
            return None
        return super().load()

    def _write(self, data: Any, path: Path) -> None:
        torch.save(data, path)

    def _read(self, path: Path) -> Any:
        return torch.load(path, map_location="cpu", weights_only=True)
