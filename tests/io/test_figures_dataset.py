import os
import struct

import pytest
from kedro.io import DatasetError
from matplotlib.figure import Figure

from multitask_cnn.io import FiguresDataset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _figure() -> Figure:
    figure = Figure(figsize=(2, 1))
    figure.add_subplot().plot([0, 1], [1, 0])
    return figure


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def test_a_dict_is_saved_as_files_in_the_folder(tmp_path):
    folder = tmp_path / "reports" / "confusion_matrices"
    dataset = FiguresDataset(str(folder), save_args={"dpi": 30})
    dataset.save({"left.png": _figure(), "right.svg": _figure()})
    assert sorted(os.listdir(folder)) == ["left.png", "right.svg"]
    assert _png_size(folder / "left.png") == (60, 30)  # 2 x 1 inches at 30 dpi
    assert b"<svg" in (folder / "right.svg").read_bytes()  # format from the suffix
    assert dataset.exists()


def test_a_single_figure_when_filepath_is_an_image(tmp_path):
    dataset = FiguresDataset(str(tmp_path / "plot.png"), save_args={"dpi": 10})
    dataset.save(_figure())
    assert _png_size(tmp_path / "plot.png") == (20, 10)
    assert os.listdir(tmp_path) == ["plot.png"]


def test_saving_again_replaces_the_files(tmp_path):
    dataset = FiguresDataset(str(tmp_path / "plots"), save_args={"dpi": 10})
    dataset.save({"a.png": _figure()})
    FiguresDataset(str(tmp_path / "plots"), save_args={"dpi": 20}).save(
        {"a.png": _figure()}
    )
    assert _png_size(tmp_path / "plots" / "a.png") == (40, 20)


def test_replace_removes_the_images_the_new_dict_does_not_name(tmp_path):
    folder = tmp_path / "plots"
    FiguresDataset(str(folder)).save({"old.png": _figure(), "kept.png": _figure()})
    (folder / "notes.txt").write_text("not an image")
    FiguresDataset(str(folder)).save({"kept.png": _figure()})  # default: left alone
    assert sorted(os.listdir(folder)) == ["kept.png", "notes.txt", "old.png"]
    FiguresDataset(str(folder), replace=True).save({"kept.png": _figure()})
    assert sorted(os.listdir(folder)) == ["kept.png", "notes.txt"]
    FiguresDataset(str(folder), replace=True).save({})
    assert sorted(os.listdir(folder)) == ["notes.txt"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ok.png": "fig", "../evil.png": "fig"}, "not a plain file name"),
        ({"ok.png": "fig", "sub/x.png": "fig"}, "not a plain file name"),
        ({"ok.png": "fig", "no_suffix": "fig"}, "needs an image suffix"),
        ({"ok.png": "fig", "x.png": 3}, "is a int, not a Figure"),
        ("fig", "save a dict"),
    ],
)
def test_bad_data_is_refused_before_any_file_is_written(tmp_path, data, message):
    figure = _figure()
    if isinstance(data, dict):
        data = {k: figure if v == "fig" else v for k, v in data.items()}
    else:
        data = figure
    dataset = FiguresDataset(str(tmp_path / "plots"))
    with pytest.raises(DatasetError, match=message):
        dataset.save(data)
    assert os.listdir(tmp_path) == []


def test_a_single_image_filepath_refuses_a_dict(tmp_path):
    with pytest.raises(DatasetError, match="save a matplotlib Figure, not dict"):
        FiguresDataset(str(tmp_path / "plot.png")).save({"a.png": _figure()})


def test_an_empty_dict_makes_an_empty_folder(tmp_path):
    dataset = FiguresDataset(str(tmp_path / "plots"))
    dataset.save({})
    assert (tmp_path / "plots").is_dir() and dataset.exists()


def test_a_failing_figure_keeps_the_old_file(tmp_path, monkeypatch):
    dataset = FiguresDataset(str(tmp_path / "plots"))
    dataset.save({"a.png": _figure()})
    before = (tmp_path / "plots" / "a.png").read_bytes()
    broken = _figure()

    def fail_midway(fname, **kwargs):
        with open(fname, "wb") as file:
            file.write(PNG_MAGIC)
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(broken, "savefig", fail_midway)
    with pytest.raises(DatasetError, match="renderer crashed"):
        dataset.save({"a.png": broken})
    assert (tmp_path / "plots" / "a.png").read_bytes() == before
    assert os.listdir(tmp_path / "plots") == ["a.png"]


def test_loads_the_saved_images_back_encoded(tmp_path):
    folder = FiguresDataset(str(tmp_path / "plots"))
    folder.save({"b.png": _figure(), "a.svg": _figure()})
    (tmp_path / "plots" / "notes.txt").write_text("not an image")
    images = folder.load()
    assert list(images) == ["a.svg", "b.png"]  # image files only, in name order
    assert images["b.png"] == (tmp_path / "plots" / "b.png").read_bytes()
    assert images["b.png"].startswith(b"\x89PNG") and b"<svg" in images["a.svg"]
    single = FiguresDataset(str(tmp_path / "one.png"))
    single.save(_figure())
    assert single.load() == (tmp_path / "one.png").read_bytes()
    with pytest.raises(DatasetError, match="no such file"):
        FiguresDataset(str(tmp_path / "missing")).load()


def test_format_comes_from_the_suffix_only(tmp_path):
    with pytest.raises(DatasetError, match="remove save_args.format"):
        FiguresDataset(str(tmp_path / "plots"), save_args={"format": "svg"})
