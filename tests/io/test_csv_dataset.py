import gzip

import pandas as pd
import pytest
from kedro.io import DatasetError

from multitask_cnn.io import CSVDataset

HISTORY = pd.DataFrame(
    {"epoch": [1, 2], "loss": [0.75, 0.5], "task": ["left", "right"]}
)


def test_round_trip_without_the_index(tmp_path):
    dataset = CSVDataset(str(tmp_path / "reports" / "history.csv"))
    dataset.save(HISTORY)
    text = (tmp_path / "reports" / "history.csv").read_text()
    assert text.splitlines() == ["epoch,loss,task", "1,0.75,left", "2,0.5,right"]
    pd.testing.assert_frame_equal(dataset.load(), HISTORY)


def test_load_and_save_args_go_to_pandas(tmp_path):
    dataset = CSVDataset(
        str(tmp_path / "h.csv"),
        save_args={"sep": ";", "index": True},
        load_args={"sep": ";", "usecols": ["task"]},
    )
    dataset.save(HISTORY)
    assert (tmp_path / "h.csv").read_text().splitlines()[0] == ";epoch;loss;task"
    assert dataset.load()["task"].tolist() == ["left", "right"]


def test_compression_follows_the_target_name(tmp_path):
    dataset = CSVDataset(str(tmp_path / "h.csv.gz"))
    dataset.save(HISTORY)
    with gzip.open(tmp_path / "h.csv.gz", "rt") as file:  # fails if not gzip
        assert file.readline() == "epoch,loss,task\n"
    pd.testing.assert_frame_equal(dataset.load(), HISTORY)


def test_a_failing_save_keeps_the_old_file(tmp_path):
    dataset = CSVDataset(str(tmp_path / "h.csv"))
    dataset.save(HISTORY)
    before = (tmp_path / "h.csv").read_bytes()
    with pytest.raises(DatasetError):
        unencodable = pd.Series(["ok", "\udcff"], dtype=object)  # fails on row 2
        dataset.save(HISTORY.assign(task=unencodable))
    assert (tmp_path / "h.csv").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["h.csv"]


def test_an_empty_table_round_trips(tmp_path):
    """A baseline reused, not trained, has an empty history; it is saved and read back."""
    dataset = CSVDataset(str(tmp_path / "h.csv"))
    dataset.save(pd.DataFrame())
    assert dataset.load().empty
