"""A symmetric ``torch.save`` / ``torch.load`` dataset for tensors and state dicts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kedro.io import DatasetError

from multitask_cnn.errors import DataFileError
from multitask_cnn.models.checkpoint import load_weights_only

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

    An array mapped from a ``.npy`` file (``np.load(..., mmap_mode="r")``: the image
    cache of a manifest larger than memory) is saved as a reference to that file and
    mapped again on load, so the ``.pt`` stays small and nothing is read into memory.
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
        torch.save(_by_reference(data, path.parent), path)

    def _read(self, path: Path) -> Any:
        return _dereference(load_weights_only(path), path.parent)


_MEMMAP = "__memmap__"  # a memory-mapped .npy file, saved by reference


def _by_reference(data: Any, folder: Path) -> Any:
    """``data`` with every array mapped from a ``.npy`` file (an image cache larger
    than memory) replaced by a reference to that file, relative to ``folder``."""
    if isinstance(data, np.memmap) and data.filename is not None:
        whole = np.load(data.filename, mmap_mode="r")
        if whole.shape != data.shape or whole.offset != data.offset:
            raise DatasetError(
                f"part of the memory-mapped file {data.filename} cannot be saved by "
                "reference; save the whole array, or a copy"
            )
        return {_MEMMAP: os.path.relpath(data.filename, folder), "shape": list(data.shape),
                "dtype": str(data.dtype)}  # fmt: skip
    if isinstance(data, dict):
        return {k: _by_reference(v, folder) for k, v in data.items()}
    return data


def _dereference(data: Any, folder: Path) -> Any:
    if isinstance(data, dict):
        if _MEMMAP in data:
            target = folder / data[_MEMMAP]
            if not target.is_file():
                raise DataFileError(
                    f"{target} (an image cache the model input refers to) is missing: "
                    "rerun data_prep"
                )
            mapped = np.load(target, mmap_mode="r")
            if (
                list(mapped.shape) != data["shape"]
                or str(mapped.dtype) != data["dtype"]
            ):
                raise DataFileError(
                    f"{target} holds {mapped.dtype} {mapped.shape}, the model input "
                    f"expects {data['dtype']} {tuple(data['shape'])}: rerun data_prep"
                )
            return mapped
        return {k: _dereference(v, folder) for k, v in data.items()}
    return data
