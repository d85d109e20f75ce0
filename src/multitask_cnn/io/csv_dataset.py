"""A pandas CSV file dataset, written atomically."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pandas.io.common import infer_compression

from .atomic import AtomicFileDataset


class CSVDataset(AtomicFileDataset[pd.DataFrame, pd.DataFrame]):
    """Save and load a ``DataFrame``; ``load_args`` go to ``pandas.read_csv`` and
    ``save_args`` to ``DataFrame.to_csv`` (``index=False`` unless given).

    Compression follows the file name (``.csv.gz``), as with ``to_csv`` on a path,
    unless ``save_args`` names one.

    Example (``catalog.yml``)::

        training_history:
          type: multitask_cnn.io.CSVDataset
          filepath: data/08_reporting/training_history.csv
    """

    DEFAULT_SAVE_ARGS = {"index": False}  # as kedro-datasets' pandas.CSVDataset

    def _write(self, data: pd.DataFrame, path: Path) -> None:
        # the temporary file ends in .tmp: infer the compression from the target
        compression = infer_compression(str(self._filepath), "infer")
        data.to_csv(path, **{"compression": compression, **self._save_args})

    def _read(self, path: Path) -> pd.DataFrame:
        try:
            return pd.read_csv(path, **self._load_args)
        except pd.errors.EmptyDataError:  # what an empty DataFrame was saved as
            return pd.DataFrame()
