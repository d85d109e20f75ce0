"""What every output dataset guarantees: umask modes, fsync, no temp files left."""

import os
import stat

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from multitask_cnn.io import CSVDataset, FiguresDataset, JSONDataset, TorchDataset

CASES = {
    "torch": (TorchDataset, "x.pt", lambda: {"w": torch.ones(2)}),
    "json": (JSONDataset, "x.json", lambda: {"a": [1, 2]}),
    "csv": (CSVDataset, "x.csv", lambda: pd.DataFrame({"a": [1, 2]})),
    "figure": (FiguresDataset, "x.png", lambda: Figure(figsize=(1, 1))),
    "figures": (FiguresDataset, "plots", lambda: {"x.png": Figure(figsize=(1, 1))}),
}


def _files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_output_files_get_the_umask_mode(tmp_path, umask, case, mask, mode):
    umask(mask)
    dataset_class, name, make_data = CASES[case]
    dataset_class(str(tmp_path / "out" / name)).save(make_data())
    files = _files(tmp_path)
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {mode}


@pytest.mark.parametrize("case", CASES)
def test_output_files_are_fsynced_and_no_temp_file_is_left(tmp_path, monkeypatch, case):
    synced = set()
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.add(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    dataset_class, name, make_data = CASES[case]
    dataset_class(str(tmp_path / "out" / name)).save(make_data())
    files = _files(tmp_path)
    assert [p.name for p in files] == [name if case != "figures" else "x.png"]
    assert {p.stat().st_ino for p in files} <= synced
    assert files[0].parent.stat().st_ino in synced
