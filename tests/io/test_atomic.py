import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from multitask_cnn.io.atomic import (
    OutputWriteError,
    atomic_path,
    remove_stale_temp_files,
)


@pytest.fixture
def umask():
    """Set the process umask for one test, restore it afterwards."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def _temp_name(target: str, pid: int, token: str = "0123abcd") -> str:
    return f".{target}.{pid}.{token}.tmp"


def test_writes_a_temp_file_in_the_same_folder_then_replaces_the_target(tmp_path):
    target = tmp_path / "a" / "b" / "x.bin"  # parents do not exist yet
    with atomic_path(target) as temp:
        assert temp.parent == target.parent
        assert temp.name.startswith(f".x.bin.{os.getpid()}.")
        assert temp.name.endswith(".tmp")
        assert not target.exists()  # nothing published before the block ends
        temp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(target.parent) == ["x.bin"]


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_the_final_file_mode_follows_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    target = tmp_path / "x.bin"
    for content in (b"first", b"second"):  # a new file, then a replaced one
        with atomic_path(target) as temp:
            temp.write_bytes(content)
        assert stat.S_IMODE(target.stat().st_mode) == mode
    assert target.read_bytes() == b"second"


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_a_failing_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path, error):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(error):
        with atomic_path(target) as temp:
            temp.write_bytes(b"half of the ne")
            raise error
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.bin"]


def test_stale_temp_files_of_dead_processes_are_removed_on_the_next_save(
    tmp_path, dead_pid
):
    dead = tmp_path / _temp_name("x.bin", dead_pid)
    mine = tmp_path / _temp_name("x.bin", os.getpid())  # a save in progress here
    init = tmp_path / _temp_name("x.bin", 1)  # pid 1 is always alive
    other_target = tmp_path / _temp_name("y.bin", dead_pid)
    not_ours = tmp_path / ".x.bin.notapid.tmp"
    for path in (dead, mine, init, other_target, not_ours):
        path.write_bytes(b"partial")

    with atomic_path(tmp_path / "x.bin") as temp:
        temp.write_bytes(b"new")

    assert not dead.exists()
    assert {p.name for p in tmp_path.iterdir()} == {
        "x.bin", mine.name, init.name, other_target.name, not_ours.name
    }  # fmt: skip


def test_remove_stale_temp_files_reports_what_it_removed(tmp_path, dead_pid):
    dead = tmp_path / _temp_name("x.bin", dead_pid)
    dead.write_bytes(b"partial")
    assert remove_stale_temp_files(tmp_path / "x.bin") == [dead]
    assert remove_stale_temp_files(tmp_path / "missing" / "x.bin") == []


def test_the_file_and_then_its_folder_are_fsynced(tmp_path, monkeypatch):
    synced = []  # (is a folder, inode) per call, in order
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        info = os.fstat(fd)
        synced.append((stat.S_ISDIR(info.st_mode), info.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    target = tmp_path / "x.bin"
    with atomic_path(target) as temp:
        temp.write_bytes(b"new")
        assert synced == []  # not before the writer is done
    # the rename keeps the inode: the fsynced file is the published one
    assert synced == [(False, target.stat().st_ino), (True, tmp_path.stat().st_ino)]


def test_a_folder_in_the_way_fails_cleanly(tmp_path):
    target = tmp_path / "x.bin"
    target.mkdir()
    with pytest.raises(OSError):
        with atomic_path(target) as temp:
            temp.write_bytes(b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]
    assert target.is_dir()


def test_paths_may_be_strings(tmp_path):
    with atomic_path(str(tmp_path / "x.txt")) as temp:
        assert isinstance(temp, Path)
        temp.write_text("ok")
    assert (tmp_path / "x.txt").read_text() == "ok"


def test_an_error_about_another_file_is_left_as_it_is(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(PermissionError):  # e.g. the writer read a file it may not
        with atomic_path(target) as temp:
            raise PermissionError(errno.EACCES, "Permission denied", "/etc/shadow")
    with pytest.raises(OutputWriteError) as raised:  # about the file being written
        with atomic_path(target) as temp:
            raise PermissionError(errno.EACCES, "Permission denied", str(temp))
    assert str(raised.value).startswith(
        f"cannot write {target}: {tmp_path} is not writable (Permission denied); "
        "earlier outputs are unchanged."
    )
    assert os.listdir(tmp_path) == []
