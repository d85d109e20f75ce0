"""Read-only catalog dataset for the real Fashion-MNIST files."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from multitask_cnn.data.fashion_mnist import (
    DEBIAN_DIR,
    FashionMNIST,
    find_fashion_mnist,
    read_fashion_mnist,
)


class FashionMNISTDataset(AbstractDataset[None, FashionMNIST]):
    """Locate Fashion-MNIST (raw folder, Debian package, opt-in download) and read it.

    Example (``catalog.yml``)::

        fashion_mnist:
          type: multitask_cnn.io.FashionMNISTDataset
          path: data/01_raw/fashion_mnist
          allow_download: ${runtime_params:allow_download,false}
    """

    def __init__(
        self,
        path: str,
        fallback_paths: list[str] | None = None,
        allow_download: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = PurePosixPath(path)
        self._fallbacks = (
            [str(DEBIAN_DIR)] if fallback_paths is None else fallback_paths
        )
        if not isinstance(allow_download, bool):
            raise DatasetError(
                f"allow_download must be true or false, got {allow_download!r}"
            )
        self._allow_download = allow_download
        self.metadata = metadata

    @property
    def search_dirs(self) -> list[str]:
        return [str(self._path), *self._fallbacks]

    def load(self) -> FashionMNIST:
        folder = find_fashion_mnist(
            self.search_dirs, allow_download=self._allow_download
        )
        return read_fashion_mnist(folder)

    def save(self, data: None) -> None:
        raise DatasetError("FashionMNISTDataset is read-only")

    def _exists(self) -> bool:
        try:
            find_fashion_mnist(self.search_dirs, allow_download=False)
        except FileNotFoundError:
            return False
        return True

    def _describe(self) -> dict[str, Any]:
        return {"search_dirs": self.search_dirs, "allow_download": self._allow_download}
