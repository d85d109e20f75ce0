"""A set of checkpoints ``{name: checkpoint}``, one ``.pt`` file per member."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from multitask_cnn.errors import DataFileError
from multitask_cnn.models.checkpoint import load_weights_only

from .atomic import AtomicFileDataset, atomic_path

logger = logging.getLogger(__name__)


def _identity(checkpoint: Any) -> dict[str, Any]:
    """What tells two checkpoints apart without reading their weights: the key of
    their inputs, the MLflow run that trained them and their best epoch."""
    if not isinstance(checkpoint, dict):
        raise TypeError(f"a checkpoint is a dict, not {type(checkpoint).__name__}")
    return {
        "baseline_key": checkpoint.get("baseline_key"),
        "run_id": checkpoint.get("provenance", {}).get("mlflow.run_id"),
        "epoch": checkpoint.get("epoch"),
    }


class CheckpointSetDataset(AtomicFileDataset[dict[str, Any], dict[str, Any]]):
    """``{name: checkpoint}`` as one ``<name>.pt`` per member, beside an index
    (``filepath``, JSON) that names the members of the last save.

    The members are usually written by nodes of their own (each task's baseline
    branch writes ``baselines/<task>.pt``); saving the set then writes the index only,
    and a member whose file is missing, unreadable or holds another checkpoint.
    Loading gives the members the index names (in its order), read with
    ``weights_only=True``; a member file is the truth: one written again since the
    index (a branch rerun alone, ``kedro run --nodes stl.left.train_baseline``) is
    loaded as it is now, and logged. A missing member is refused, naming it.

    Example (``catalog.yml``)::

        baseline_checkpoints:
          type: multitask_cnn.io.CheckpointSetDataset
          filepath: data/06_models/baselines/index.json
    """

    def _member(self, name: str) -> Path:
        return Path(self._filepath).with_name(f"{name}.pt")

    def save(self, data: dict[str, Any]) -> None:
        index = {}
        for name, checkpoint in data.items():
            path, identity = self._member(name), _identity(checkpoint)
            if _identity_on_disk(path) != identity:
                with atomic_path(path) as temp:
                    torch.save(checkpoint, temp)
            index[name] = identity
        super().save(index)

    def _write(self, data: dict[str, Any], path: Path) -> None:
        path.write_text(json.dumps({"members": data}, indent=2) + "\n")

    def _read(self, path: Path) -> dict[str, Any]:
        members = json.loads(path.read_text())["members"]
        checkpoints = {}
        for name, identity in members.items():
            member = self._member(name)
            if not member.is_file():
                raise DataFileError(
                    f"{member} ({name!r} in the set {path}) is missing: run the "
                    "pipeline that writes it again"
                )
            checkpoints[name] = load_weights_only(member)
            if _identity(checkpoints[name]) != identity:
                logger.info("%s was written again since the set %s: loading it as it is "
                            "now (%s)", member, path, _identity(checkpoints[name]))  # fmt: skip
        return checkpoints


def _identity_on_disk(path: Path) -> dict[str, Any] | None:
    """The identity of the checkpoint in ``path``; None when there is none to read."""
    if not path.is_file():
        return None
    try:
        return _identity(load_weights_only(path))
    except (DataFileError, TypeError):  # unreadable, or not a checkpoint: rewritten
        return None
