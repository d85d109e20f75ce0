"""One run at a time per data folder: runs of one Kedro environment share its files
(model input, checkpoints, reports), and two at once would train into and evaluate
each other's. :class:`RunLock` is an exclusive ``flock`` on a file beside the data
folder (``data/.smoke.run.lock`` for ``data/smoke``):
a second run waits for the first to finish (saying whom it waits for) instead of
clobbering its outputs. The kernel drops the lock when the process ends, however it
ends, so a killed run never leaves a stale lock."""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
from pathlib import Path

__all__ = ["RunLock"]

logger = logging.getLogger(__name__)


class RunLock:
    """``acquire()`` blocks until no other process holds the lock on ``path``;
    ``release()`` lets the next run go."""

    def __init__(self, path: str | Path, doing: str | None = None) -> None:
        self.path = Path(path)
        self.doing = doing or "uses the same data folder"  # for the waiting message
        self._file = None

    def acquire(self) -> None:
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            logger.warning(
                "Another run %s (%s); waiting for it to finish", self.doing, holder
            )
            fcntl.flock(file, fcntl.LOCK_EX)
            logger.info("%s is free; this run goes on", self.path)
        file.seek(0)
        file.truncate()
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        file.write(f"pid {os.getpid()}, started {started}\n")
        file.flush()
        self._file = file

    def release(self) -> None:
        if self._file is None:
            return
        self._file.seek(0)
        self._file.truncate()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None
