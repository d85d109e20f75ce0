"""Read-only catalog dataset for scikit-learn's bundled handwritten digits."""

from __future__ import annotations

from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError


class DigitsDataset(AbstractDataset[None, dict[str, np.ndarray]]):
    """``sklearn.datasets.load_digits``: ``{"images": (1797, 8, 8) 0..16, "labels":
    (1797,)}``. The data ships with scikit-learn; nothing is downloaded.

    Example (``catalog.yml``)::

        digits:
          type: multitask_cnn.io.DigitsDataset
    """

    def __init__(self, metadata: dict[str, Any] | None = None) -> None:
        self.metadata = metadata

    def load(self) -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return {"images": np.asarray(bunch.images), "labels": np.asarray(bunch.target)}

    def save(self, data: None) -> None:
        raise DatasetError("DigitsDataset is read-only")

    def _describe(self) -> dict[str, Any]:
        return {"source": "sklearn.datasets.load_digits"}
