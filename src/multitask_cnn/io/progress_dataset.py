"""Training progress that survives a crash: a handle on one file that the training node
writes at the end of every epoch and reads when it starts, so that the same command,
run again, continues where the last run stopped."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

import torch
from kedro.io import AbstractDataset, DatasetError

from multitask_cnn.errors import DataFileError
from multitask_cnn.models.checkpoint import load_weights_only

from .atomic import atomic_path

__all__ = ["TrainProgress", "TrainProgressDataset"]

_START_OVER = (
    "it is the saved progress of an interrupted training: delete it, or run with "
    "--params training.resume=false, to start over"
)


class TrainProgress:
    """The progress file at ``path``: :meth:`read` (None when there is none),
    :meth:`write` (atomic: a crash mid-write leaves the previous epoch's file),
    :meth:`clear` (when training has finished)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        progress = load_weights_only(self.path, fix=_START_OVER)
        if not isinstance(progress, dict):
            raise DataFileError(
                f"{self.path} holds {type(progress).__name__}, not saved progress; "
                f"{_START_OVER}"
            )
        return progress

    def write(self, progress: Mapping[str, Any]) -> None:
        with atomic_path(self.path) as temp:
            torch.save(dict(progress), temp)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"TrainProgress({str(self.path)!r})"


class TrainProgressDataset(AbstractDataset[NoReturn, TrainProgress]):
    """``load`` gives the :class:`TrainProgress` handle of ``filepath`` (the file need
    not exist yet); the node reads and writes through it. Not saved as a node output.

    Example (``catalog.yml``)::

        training_progress:
          type: multitask_cnn.io.TrainProgressDataset
          filepath: data/06_models/training_progress.pt
    """

    def __init__(
        self, filepath: str, *, metadata: dict[str, Any] | None = None
    ) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> TrainProgress:
        return TrainProgress(Path(self._filepath))

    def save(self, data: NoReturn) -> None:
        raise DatasetError(
            f"{self._filepath}: training progress is written by the training node "
            "through the handle it loads, not saved as an output"
        )

    def _exists(self) -> bool:
        return True  # the handle always exists; the file may not

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
