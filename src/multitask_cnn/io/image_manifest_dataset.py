"""Read-only catalog dataset for a CSV image manifest (bring-your-own data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError


@dataclass(frozen=True)
class ImageManifest:
    """The manifest's cells as text (empty = missing) and the folder image paths
    resolve in; the images themselves are decoded by data_prep, after every row has
    been checked."""

    table: pd.DataFrame
    root: Path
    filepath: Path


class ImageManifestDataset(AbstractDataset[None, ImageManifest | None]):
    """A CSV with an image-path column and one column per label (README "Your own
    images"). Paths resolve inside ``root`` (default: the CSV's folder) and may not
    leave it.

    Example (``catalog.yml``)::

        image_manifest:
          type: multitask_cnn.io.ImageManifestDataset
          filepath: data/01_raw/my_images/manifest.csv
          root: data/01_raw/my_images

    With ``missing_ok: true`` a manifest that does not exist loads as ``None`` (the
    project's default catalog names one that only manifest tasks need).
    """

    def __init__(
        self,
        filepath: str,
        root: str | None = None,
        *,
        missing_ok: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._filepath = PurePosixPath(filepath)
        self._root = PurePosixPath(root) if root is not None else self._filepath.parent
        self._missing_ok = missing_ok
        self.metadata = metadata

    def load(self) -> ImageManifest | None:
        path = Path(self._filepath)
        if not path.is_file():
            if self._missing_ok:
                return None
            raise DatasetError(f"no image manifest at {str(path)!r}")
        try:
            table = pd.read_csv(
                path, dtype=str, keep_default_na=False, skipinitialspace=True
            )
        except pd.errors.EmptyDataError:
            table = pd.DataFrame()
        except (pd.errors.ParserError, UnicodeDecodeError) as error:
            raise DatasetError(
                f"image manifest {str(path)!r} is not a readable CSV: {error}"
            ) from None
        table.columns = [str(c).strip() for c in table.columns]
        return ImageManifest(table, Path(self._root), path)

    def save(self, data: None) -> None:
        raise DatasetError("ImageManifestDataset is read-only")

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "root": str(self._root)}
