"""Read-only catalog dataset for a CSV image manifest (bring-your-own data)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from multitask_cnn.data.manifest import decode_images

from .atomic import atomic_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageManifest:
    """The manifest's cells as text (empty = missing) and the folder image paths
    resolve in; the images themselves are decoded by data_prep, after every row has
    been checked: into memory, or, for a manifest larger than the memory budget, once
    into memory-mapped ``.npy`` files in ``cache_dir`` (:meth:`decode_to_cache`)."""

    table: pd.DataFrame
    root: Path
    filepath: Path
    cache_dir: Path | None = None

    def decode_to_cache(
        self,
        parts: Mapping[str, tuple[Sequence[Path], Sequence[int]]],
        channels: int,
        size: int,
        *,
        key: str,
        workers: int = 0,
        column: str = "image",
        chunk: int = 8192,
    ) -> dict[str, np.memmap]:
        """Decode each part (``{name: (paths, manifest rows)}``) into
        ``cache_dir/<key>/<name>.npy``, ``chunk`` images at a time (memory stays
        bounded), and map the files read-only.

        ``key`` names what the images depend on (:meth:`ManifestPlan.key`): a model
        input refers to its own key's files, so it never meets another manifest's
        images. Each file is written to a temporary file and renamed into place only
        after every image of every part decoded (an unreadable image leaves no new
        file); then the caches of other keys are removed (a model input that refers to
        one asks for data_prep to run again).
        """
        if self.cache_dir is None:
            raise DatasetError(
                "the image_manifest catalog entry has no cache_dir; a manifest larger "
                "than data_prep.manifest.memory_budget_mb streams from a cache there"
            )
        folder = self.cache_dir / key
        total = sum(len(paths) for paths, _ in parts.values())
        done = 0
        with ExitStack() as stack:
            stack.callback(_remove_if_empty, folder)  # after a failure: no empty folder
            temps = {name: stack.enter_context(atomic_path(folder / f"{name}.npy"))
                     for name in parts}  # fmt: skip
            for name, (paths, rows) in parts.items():
                out = np.lib.format.open_memmap(
                    temps[name], mode="w+", dtype=np.uint8,
                    shape=(len(paths), channels, size, size),
                )  # fmt: skip
                for start in range(0, len(paths), chunk):
                    end = start + chunk
                    decode_images(paths[start:end], channels, size, workers=workers,
                                  out=out[start:end], rows=rows[start:end], column=column)  # fmt: skip
                    done += len(paths[start:end])
                    logger.info(
                        "Decoded %d / %d manifest images into %s", done, total, folder
                    )
                out.flush()
                del out
        for other in self.cache_dir.iterdir():
            if other.is_dir() and other.name != key:
                shutil.rmtree(other)
        return {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in parts}


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


class ImageManifestDataset(AbstractDataset[None, ImageManifest | None]):
    """A CSV with an image-path column and one column per label (README "Your own
    images"). Paths resolve inside ``root`` (default: the CSV's folder) and may not
    leave it. ``cache_dir`` holds the decoded images of a manifest too large for
    memory.

    Example (``catalog.yml``)::

        image_manifest:
          type: multitask_cnn.io.ImageManifestDataset
          filepath: data/01_raw/my_images/manifest.csv
          root: data/01_raw/my_images
          cache_dir: data/05_model_input/manifest_cache

    With ``missing_ok: true`` a manifest that does not exist loads as ``None`` (the
    project's default catalog names one that only manifest tasks need).
    """

    def __init__(
        self,
        filepath: str,
        root: str | None = None,
        cache_dir: str | None = None,
        *,
        missing_ok: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._filepath = PurePosixPath(filepath)
        self._root = PurePosixPath(root) if root is not None else self._filepath.parent
        self._cache_dir = PurePosixPath(cache_dir) if cache_dir is not None else None
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
        table = table.fillna("")  # a short row's missing cells: empty, as written
        table.columns = [str(c).strip() for c in table.columns]
        cache = Path(self._cache_dir) if self._cache_dir is not None else None
        return ImageManifest(table, Path(self._root), path, cache)

    def save(self, data: None) -> None:
        raise DatasetError("ImageManifestDataset is read-only")

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "root": str(self._root),
                "cache_dir": str(self._cache_dir)}  # fmt: skip
