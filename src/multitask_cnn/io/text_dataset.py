"""A UTF-8 text file dataset (a Markdown report), written atomically."""

from __future__ import annotations

from pathlib import Path

from .atomic import AtomicFileDataset


class TextDataset(AtomicFileDataset[str, str]):
    """Save and load one string as a UTF-8 file.

    Example (``catalog.yml``)::

        efficiency_table:
          type: multitask_cnn.io.TextDataset
          filepath: data/08_reporting/efficiency.md
    """

    def _write(self, data: str, path: Path) -> None:
        path.write_text(data, encoding="utf-8")

    def _read(self, path: Path) -> str:
        return path.read_text(encoding="utf-8")
