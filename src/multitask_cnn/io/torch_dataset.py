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
    """

    def __init__(
        self, filepath: str, *, metadata: dict[str, Any] | None = None
    ) -> None:
        super().__init__(filepath, metadata=metadata)

    def _write(self, data: Any, path: Path) -> None:
        torch.save(data, path)

    def _read(self, path: Path) -> Any:
        return torch.load(path, map_location="cpu", weights_only=True)
