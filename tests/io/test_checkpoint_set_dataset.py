"""CheckpointSetDataset: {name: checkpoint} as one file per member and an index."""

import json
import logging

import pytest
import torch
from kedro.io import DatasetError

from multitask_cnn.io import CheckpointSetDataset, TorchDataset


def _checkpoint(key: str, run: str = "r1") -> dict:
    return {"model": {"w": torch.randn(3)}, "epoch": 2, "baseline_key": key,
            "provenance": {"mlflow.run_id": run}}  # fmt: skip


def test_the_set_indexes_the_members_its_nodes_wrote_and_writes_none_again(tmp_path):
    folder = tmp_path / "baselines"
    left, right = _checkpoint("kl"), _checkpoint("kr")
    for name, checkpoint in (("left", left), ("right", right)):
        TorchDataset(str(folder / f"{name}.pt")).save(checkpoint)
    written = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.pt")}
    dataset = CheckpointSetDataset(str(folder / "index.json"))
    dataset.save({"right": right, "left": left})
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.pt")} == written
    assert list(json.loads((folder / "index.json").read_text())["members"]) == [
        "right",
        "left",
    ]
    loaded = dataset.load()
    assert list(loaded) == ["right", "left"]  # the saved order
    assert torch.equal(loaded["left"]["model"]["w"], left["model"]["w"])
    # a set of fewer members: the index names only those
    dataset.save({"left": left})
    assert list(dataset.load()) == ["left"]


def test_a_member_missing_or_different_is_written(tmp_path):
    dataset = CheckpointSetDataset(str(tmp_path / "index.json"))
    TorchDataset(str(tmp_path / "left.pt")).save(_checkpoint("old"))
    new = _checkpoint("new")
    dataset.save({"left": new, "right": _checkpoint("kr")})
    assert TorchDataset(str(tmp_path / "left.pt")).load()["baseline_key"] == "new"
    assert dataset.load()["right"]["baseline_key"] == "kr"


def test_a_member_written_again_since_is_loaded_as_it_is_and_a_missing_one_refused(
    tmp_path, caplog
):
    dataset = CheckpointSetDataset(str(tmp_path / "index.json"))
    dataset.save({"left": _checkpoint("kl"), "right": _checkpoint("kr")})
    # a branch rerun alone (kedro run --nodes stl.left.train_baseline)
    TorchDataset(str(tmp_path / "left.pt")).save(_checkpoint("kl2", run="r2"))
    with caplog.at_level(logging.INFO):
        assert dataset.load()["left"]["baseline_key"] == "kl2"
    assert "left.pt was written again since the set" in caplog.text
    (tmp_path / "left.pt").unlink()
    with pytest.raises(
        DatasetError, match=r"left\.pt \('left' in the set .*\) is missing"
    ):
        dataset.load()


def test_an_unreadable_member_is_written_again(tmp_path):
    (tmp_path / "left.pt").write_bytes(b"not a checkpoint")
    dataset = CheckpointSetDataset(str(tmp_path / "index.json"))
    dataset.save({"left": _checkpoint("kl")})
    assert dataset.load()["left"]["baseline_key"] == "kl"
