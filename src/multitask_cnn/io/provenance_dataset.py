"""Read-only catalog dataset: where the current run comes from."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError

from multitask_cnn.provenance import project_root, run_provenance


class ProvenanceDataset(AbstractDataset[None, dict[str, Any]]):
    """Loads the git commit and dirty flag of the project, the active MLflow run and
    the torch version, so that the training node can write them into the checkpoint
    without knowing about git or MLflow.

    Example (``catalog.yml``)::

        provenance:
          type: multitask_cnn.io.ProvenanceDataset
    """

    def __init__(self, metadata: dict[str, Any] | None = None) -> None:
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        return run_provenance(project_root())

    def save(self, data: None) -> None:
        raise DatasetError("ProvenanceDataset is read-only")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {}
