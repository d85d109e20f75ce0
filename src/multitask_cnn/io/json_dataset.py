"""A JSON file dataset (UTF-8), written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .atomic import AtomicFileDataset


class JSONDataset(AtomicFileDataset[Any, Any]):
    """Save and load JSON-serialisable data; ``save_args`` go to ``json.dump``.

    Example (``catalog.yml``)::

        task_metrics:
          type: multitask_cnn.io.JSONDataset
          filepath: data/08_reporting/metrics.json
          save_args:
            indent: 2
    """

    DEFAULT_SAVE_ARGS = {"indent": 2}  # as kedro-datasets' json.JSONDataset

    def __init__(
        self,
        filepath: str,
        *,
        save_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath, save_args=save_args, metadata=metadata)

    def _write(self, data: Any, path: Path) -> None:
        with path.open("w", encoding="utf-8") as file:
            json.dump(data, file, **self._save_args)

    def _read(self, path: Path) -> Any:
        with path.open(encoding="utf-8") as file:
            return json.load(file)
