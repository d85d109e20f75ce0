"""Resumable training for the training nodes (pretraining, baselines, multi-task).

A node trains inside :func:`resumable`: after every epoch the train state goes to its
progress file (a :class:`~multitask_cnn.io.TrainProgress`, atomically), with what
the node must match to continue it (its *identity*: settings, data, start). When the
same command runs again after a kill or a stop, the node continues from there; progress
made with other settings or data is refused, naming what differs. The file names the
*part* it holds (the model the node trains: each baseline branch its task's). It is
removed when the node has finished (and when a loss went non-finite: resuming would
meet it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from multitask_cnn.config import flatten
from multitask_cnn.errors import UserError
from multitask_cnn.io import TrainProgress
from multitask_cnn.tracking import active_run_id, note_resumed_run
from multitask_cnn.training import GracefulStop, NonFiniteLossError

__all__ = ["ProgressMismatchError", "Resumption", "resumable", "without_epochs"]

logger = logging.getLogger(__name__)

_FORMAT = 2  # 1: one training per file, no parts


def without_epochs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A reuse key's inputs as a progress identity: the epoch budget left out, so that
    a larger ``epochs`` continues the same training (as for the multi-task model)."""
    budget = {k: v for k, v in inputs["budget"].items() if k != "epochs"}
    return dict(inputs) | {"budget": budget}


class ProgressMismatchError(UserError, ValueError):
    """Saved progress that this run cannot continue (other settings, data or version)."""


class Resumption:
    """What a training node hands ``train_model``: ``state_for(part)`` (the train state
    to continue, or None), ``saver(part)`` (its ``on_checkpoint``) and ``stop``."""

    def __init__(
        self,
        progress: TrainProgress | None,
        identity: Mapping[str, Any],
        previous: Mapping[str, Any] | None,
        stop: GracefulStop,
    ) -> None:
        self._progress = progress
        self._identity = dict(identity)
        self._previous = previous
        self.stop = stop

    def state_for(self, part: str) -> dict[str, Any] | None:
        previous = self._previous
        if previous is None or previous["part"] != part:
            return None
        return previous["state"]

    def saver(self, part: str):
        """``on_checkpoint`` for the training of ``part`` (None without a file)."""
        if self._progress is None:
            return None

        def save(state: dict[str, Any]) -> None:
            self._write(part, state)

        return save

    def _write(self, part: str, state: dict[str, Any]) -> None:
        if self._progress is None:
            return
        self._progress.write({"format": _FORMAT, "identity": self._identity, "part": part,
                              "state": state, "mlflow_run_id": active_run_id()})  # fmt: skip


@contextmanager
def resumable(
    progress: TrainProgress | None, identity: Mapping[str, Any], *, enabled: bool
) -> Iterator[Resumption]:
    """Train inside this: it reads (and checks) what an interrupted run left in
    ``progress`` when ``enabled`` (``training.resume``), stops gracefully on SIGTERM /
    Ctrl-C, and removes the file when the block ends normally."""
    previous = _previous(progress, identity) if enabled and progress else None
    with GracefulStop() as stop:
        try:
            yield Resumption(progress, identity, previous, stop)
        except NonFiniteLossError:
            if progress is not None:
                progress.clear()
            raise
    if progress is not None:
        progress.clear()  # finished: the next run starts afresh


def _previous(
    progress: TrainProgress, identity: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The progress an interrupted run left, if any; refused (naming what differs) when
    it was made with other parameters or data."""
    previous = progress.read()
    if previous is None:
        return None
    if previous.get("format") != _FORMAT:
        raise ProgressMismatchError(
            f"{progress.path} holds training progress written by another version of "
            "this project; run with --params training.resume=false to start over (or "
            "delete the file)"
        )
    saved, now = flatten(previous["identity"]), flatten(dict(identity))
    differs = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if differs:
        shown = "; ".join(
            f"{k}: {saved.get(k)!r} then, {now.get(k)!r} now" for k in differs[:6]
        )
        raise ProgressMismatchError(
            f"{progress.path} holds the progress of an interrupted training with other "
            f"settings or data ({shown}{'; ...' if len(differs) > 6 else ''}). Run with "
            "the settings it had to finish it, or with --params training.resume=false "
            "to start over (or delete the file)"
        )
    state = previous["state"]
    logger.info(
        "Resuming the interrupted training: %s after epoch %s (MLflow run %s)",
        previous["part"], state["epoch"], previous.get("mlflow_run_id"),
    )  # fmt: skip
    note_resumed_run(previous.get("mlflow_run_id"), state["history"])
    return previous
