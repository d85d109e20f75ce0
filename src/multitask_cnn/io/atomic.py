"""Atomic file writes, and the base class of this project's file datasets.

``atomic_path(target)`` hands out a temporary file next to ``target``; when the
``with`` block ends without an error, the file is fsynced and renamed onto
``target`` (one ``os.replace``, atomic on POSIX), then the folder is fsynced. On
any error the temporary file is removed and ``target`` keeps its previous bytes.
Readers therefore see the old file or the new one, never a half-written one.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, TypeVar

from kedro.io import AbstractDataset, DatasetError

from multitask_cnn.errors import DataFileError, UserError

__all__ = [
    "AtomicFileDataset",
    "OutputWriteError",
    "atomic_path",
    "remove_stale_temp_files",
]

_DI = TypeVar("_DI")
_DO = TypeVar("_DO")

_MAX_NAME_TRIES = 100


def _temp_pattern(target: Path) -> re.Pattern[str]:
    """``.{name}.{pid}.{8 hex digits}.tmp``, the names ``atomic_path`` gives out."""
    return re.compile(rf"\.{re.escape(target.name)}\.([1-9][0-9]*)\.[0-9a-f]{{8}}\.tmp")


def _is_alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 only checks, sends nothing)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to another user
        return True
    except (OverflowError, ValueError):  # not a possible process id
        return False
    return True


def remove_stale_temp_files(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files of ``target`` whose writer process has died.

    A temporary file of a live process (this one included) is left alone: it may be
    a save in progress. Process ids are those of this machine (and pid namespace), so
    a folder shared with other machines can lose another machine's save in progress.
    Returns the removed paths.
    """
    target = Path(target)
    pattern = _temp_pattern(target)
    removed = []
    try:
        names = os.listdir(target.parent)
    except FileNotFoundError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if match and not _is_alive(int(match.group(1))):
            stale = target.parent / name
            stale.unlink(missing_ok=True)  # another process may clean it at once
            removed.append(stale)
    return removed


def _create_temp_file(target: Path) -> Path:
    """Create an empty, new temporary file; its mode is ``0o666 & ~umask``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_MAX_NAME_TRIES):
        temp = target.with_name(
            f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        )
        try:
            fd = os.open(temp, flags, 0o666)  # the kernel applies the umask
        except FileExistsError:
            continue
        os.close(fd)
        return temp
    raise FileExistsError(f"no free temporary file name next to {target}")


def _fsync_file(path: Path) -> None:
    """Flush the file's data to disk (the writer has closed, so flushed, its handle)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; best effort (not every OS/FS allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write ``target``'s new content to, then publish it.

    Creates ``target``'s parent folders, removes stale temporary files of ``target``
    (see ``remove_stale_temp_files``), and yields an empty file
    ``.{target name}.{pid}.{random}.tmp`` in the same folder. The caller writes to it
    by path and closes its handle before the block ends. On success the file is
    fsynced, replaces ``target`` and the folder is fsynced; the final mode is
    ``0o666 & ~umask``. On any exception the temporary file is removed and
    ``target`` is untouched. Writers that infer a format from the file suffix (e.g.
    ``savefig``) must be told the format: the temporary file ends in ``.tmp``.

    Example::

        with atomic_path("data/metrics.json") as temp:
            temp.write_text(json.dumps(metrics))
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(target)
        temp = _create_temp_file(target)
    except OSError as error:
        raise _write_error(target, error) or error
    try:
        yield temp
        _fsync_file(temp)
        os.replace(temp, target)
    except BaseException as error:
        # classified while the temporary file still holds what fitted: its removal
        # frees that space again
        wrapped = (_write_error(target, error, temp)
                   if isinstance(error, Exception) else None)  # fmt: skip
        temp.unlink(missing_ok=True)
        if wrapped is None:
            raise
        raise wrapped from error
    _fsync_folder(target.parent)


class OutputWriteError(UserError, OSError):
    """An output that cannot be written: a full disk, a folder that is read-only or
    not a folder. The file it would replace keeps its previous content."""


_NO_ROOM = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
_NOT_A_FOLDER = {errno.ENOTDIR, errno.EEXIST}
_LOW = 1 << 20  # bytes free under which a failed write counts as a full disk


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _write_error(
    target: Path, error: BaseException, temp: Path | None = None
) -> OutputWriteError | None:
    """``error`` as a user error when it says the disk or a folder refused this write
    (a writer such as ``torch.save`` reports a full disk as a ``RuntimeError``: then
    the free space decides); None for any other error, such as one about another file
    the writer read."""
    code = getattr(error, "errno", None)
    name = getattr(error, "filename", None)
    path = None if name is None else Path(name)
    is_temp = path is not None and (path == temp or _temp_pattern(target).fullmatch(path.name)
                                    is not None and path.parent == target.parent)  # fmt: skip
    if path is not None and not is_temp and path not in {target, *target.parents}:
        return None  # about another file
    shown = target.parent if path is None or is_temp else path
    free = _free_bytes(target.parent)
    kept = (f"; {target.name} keeps its previous content" if os.path.exists(target)
            else "; earlier outputs are unchanged")  # fmt: skip
    low = code is None and free is not None and free < _LOW
    if code in _NO_ROOM or (low and isinstance(error, RuntimeError)):
        return OutputWriteError(
            f"cannot write {target}: no space left on the disk of {target.parent}"
            f"{kept}, and no partial file is left. Free some space (or point data_root "
            "in conf/<env>/globals.yml at another disk) and rerun"
        )
    if code in _NOT_WRITABLE:
        return OutputWriteError(
            f"cannot write {target}: {shown} is not writable ({error.strerror}){kept}. "
            "Make it writable for this user (or point data_root in "
            "conf/<env>/globals.yml elsewhere) and rerun"
        )
    if code in _NOT_A_FOLDER:
        return OutputWriteError(
            f"cannot write {target}: {shown} is in the way of a folder on its path "
            f"({error.strerror}){kept}. Move it aside and rerun"
        )
    return None


class AtomicFileDataset(AbstractDataset[_DI, _DO]):
    """A Kedro dataset of one local file (or folder) that is always written atomically.

    Subclasses implement ``_write(data, path)`` (write ``data`` to ``path``, a
    temporary file) and ``_read(path)``; without ``_read`` the dataset is write-only
    (``load`` raises ``DatasetError``). ``save`` publishes the file with
    ``atomic_path``; a dataset of several files overrides ``save`` and calls
    ``atomic_path`` once per file (see ``FiguresDataset``). The hooks are not called
    ``_save``/``_load``: Kedro would take methods of those names for ``save`` and
    ``load`` themselves. ``_filepath`` is the attribute kedro-mlflow's
    ``MlflowArtifactDataset`` logs after a save; it may be a folder, which MLflow then
    logs with all its files.
    """

    DEFAULT_LOAD_ARGS: ClassVar[dict[str, Any]] = {}
    DEFAULT_SAVE_ARGS: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        filepath: str,
        *,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._filepath = PurePosixPath(filepath)
        self._load_args = {**self.DEFAULT_LOAD_ARGS, **(load_args or {})}
        self._save_args = {**self.DEFAULT_SAVE_ARGS, **(save_args or {})}
        self.metadata = metadata

    def _write(self, data: _DI, path: Path) -> None:
        """Write ``data`` to ``path`` (a temporary file) and close it."""
        raise NotImplementedError(f"{type(self).__name__} must implement _write")

    def _read(self, path: Path) -> _DO:
        """Read the data back from ``path``, which exists; by default write-only."""
        raise DatasetError(f"{type(self).__name__} is write-only ({self._filepath})")

    def load(self) -> _DO:
        path = Path(self._filepath)
        if not self._exists():
            raise DataFileError(
                f"{path}: no such file; run the pipeline that writes it first"
            )
        return self._read(path)

    def save(self, data: _DI) -> None:
        with atomic_path(self._filepath) as temp:
            self._write(data, temp)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": str(self._filepath),
            "load_args": self._load_args or None,  # None: left out of repr
            "save_args": self._save_args or None,
        }
