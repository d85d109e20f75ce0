import os
from dataclasses import dataclass

import pytest
import torch
from kedro.io import DatasetError

from multitask_cnn.io import TorchDataset


@dataclass
class _NotAllowed:  # an arbitrary class: weights_only loading must refuse it
    value: int


def test_round_trip_of_a_checkpoint_loads_on_the_cpu(tmp_path):
    dataset = TorchDataset(str(tmp_path / "models" / "checkpoint.pt"))
    checkpoint = {
        "model": {"w": torch.arange(6.0).reshape(2, 3)},
        "epoch": 3,
        "history": [{"loss": 0.5}],
    }
    dataset.save(checkpoint)
    loaded = dataset.load()
    assert torch.equal(loaded["model"]["w"], checkpoint["model"]["w"])
    assert loaded["model"]["w"].device.type == "cpu"
    assert loaded["epoch"] == 3 and loaded["history"] == [{"loss": 0.5}]
    assert dataset.exists()


def test_never_leaves_half_written_files(tmp_path):
    dataset = TorchDataset(str(tmp_path / "sub" / "x.pt"))
    dataset.save({"a": torch.arange(3)})
    before = (tmp_path / "sub" / "x.pt").read_bytes()
    with pytest.raises(DatasetError, match="pickle"):
        dataset.save({"a": lambda: None})  # not picklable: save fails midway
    assert (tmp_path / "sub" / "x.pt").read_bytes() == before  # old file intact
    assert dataset.load()["a"].tolist() == [0, 1, 2]
    assert os.listdir(tmp_path / "sub") == ["x.pt"]


def test_load_refuses_arbitrary_objects(tmp_path):
    dataset = TorchDataset(str(tmp_path / "x.pt"))
    dataset.save({"a": _NotAllowed(1)})
    with pytest.raises(DatasetError, match="weights_only"):
        dataset.load()


def test_loading_a_missing_file_says_what_to_do(tmp_path):
    dataset = TorchDataset(str(tmp_path / "x.pt"))
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="no such file; run the pipeline"):
        dataset.load()
