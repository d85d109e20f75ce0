import os

import pytest
from kedro.io import DatasetError

from multitask_cnn.io import JSONDataset

METRICS = {"test": {"left": {"accuracy": 0.875, "n": 400}}, "name": "héllo"}


def test_round_trip_indents_by_two_by_default(tmp_path):
    dataset = JSONDataset(str(tmp_path / "reports" / "metrics.json"))
    dataset.save(METRICS)
    assert dataset.load() == METRICS
    text = (tmp_path / "reports" / "metrics.json").read_text(encoding="utf-8")
    assert text.startswith('{\n  "test": {\n    "left"')


def test_save_args_go_to_json_dump(tmp_path):
    dataset = JSONDataset(
        str(tmp_path / "m.json"),
        save_args={"indent": None, "sort_keys": True, "ensure_ascii": False},
    )
    dataset.save({"b": 1, "a": "é"})
    assert (tmp_path / "m.json").read_bytes() == '{"a": "é", "b": 1}'.encode()


def test_an_unserialisable_value_keeps_the_old_file(tmp_path):
    dataset = JSONDataset(str(tmp_path / "m.json"))
    dataset.save({"a": 1})
    before = (tmp_path / "m.json").read_bytes()
    with pytest.raises(DatasetError, match="not JSON serializable"):
        dataset.save({"a": 2, "b": object()})  # json.dump has written '{"a": 2, ...
    assert (tmp_path / "m.json").read_bytes() == before
    assert os.listdir(tmp_path) == ["m.json"]
