import gzip
from pathlib import Path

import numpy as np
import pytest

from multitask_cnn.data.fashion_mnist import (
    FILES,
    FashionMNISTNotFoundError,
    find_fashion_mnist,
    read_fashion_mnist,
)
from multitask_cnn.io import FashionMNISTDataset


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as stream:
            stream.write(payload)
    else:
        path.write_bytes(payload)


def _write_slice(folder: Path, data, n: int, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        ("train", "images"): data.train_images[:n], ("train", "labels"): data.train_labels[:n],
        ("test", "images"): data.test_images[:n], ("test", "labels"): data.test_labels[:n],
    }  # fmt: skip
    for key, stem in FILES.items():
        _write_idx(folder / stem, arrays[key], gz)


def test_reads_the_real_official_splits(fashion_mnist):
    assert fashion_mnist.train_images.shape == (60000, 28, 28)
    assert fashion_mnist.test_images.shape == (10000, 28, 28)
    assert fashion_mnist.train_images.dtype == np.uint8
    assert fashion_mnist.train_labels.dtype == np.int64
    # Fashion-MNIST is balanced: 6000 train / 1000 test images per class
    assert np.bincount(fashion_mnist.train_labels).tolist() == [6000] * 10
    assert np.bincount(fashion_mnist.test_labels).tolist() == [1000] * 10


@pytest.mark.parametrize("gz", [True, False])
def test_reads_plain_and_gzipped_idx(tmp_path, fashion_mnist, gz):
    _write_slice(tmp_path, fashion_mnist, 50, gz)
    data = read_fashion_mnist(tmp_path)
    np.testing.assert_array_equal(data.train_images, fashion_mnist.train_images[:50])
    np.testing.assert_array_equal(data.test_labels, fashion_mnist.test_labels[:50])


def test_first_complete_folder_wins(tmp_path, fashion_mnist, fashion_mnist_dir):
    raw = tmp_path / "raw"
    _write_slice(raw, fashion_mnist, 20, gz=False)
    assert find_fashion_mnist([raw, fashion_mnist_dir]) == raw
    # an incomplete raw folder falls through to the next one
    (raw / FILES["test", "labels"]).unlink()
    assert find_fashion_mnist([raw, fashion_mnist_dir]) == fashion_mnist_dir


def test_missing_data_names_every_folder_and_the_fix(tmp_path):
    missing, empty = tmp_path / "nowhere", tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FashionMNISTNotFoundError) as error:
        find_fashion_mnist([missing, empty], allow_download=False)
    message = str(error.value)
    assert f"{missing} (missing)" in message
    assert f"{empty} (incomplete)" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert not missing.exists()  # nothing created, nothing downloaded


def test_corrupt_file_is_reported_with_its_path(tmp_path, fashion_mnist):
    _write_slice(tmp_path, fashion_mnist, 10, gz=False)
    (tmp_path / FILES["train", "images"]).write_bytes(
        b"\x00\x00\x0d\x03" + b"\x00" * 12
    )
    with pytest.raises(
        ValueError, match="train-images-idx3-ubyte: not an unsigned-byte"
    ):
        read_fashion_mnist(tmp_path)


def test_catalog_dataset_searches_raw_folder_then_fallbacks(
    tmp_path, fashion_mnist_dir
):
    dataset = FashionMNISTDataset(
        path=str(tmp_path / "raw"), fallback_paths=[str(fashion_mnist_dir)]
    )
    assert dataset.exists()
    assert dataset.load().source == str(fashion_mnist_dir)
    nowhere = FashionMNISTDataset(path=str(tmp_path / "raw"), fallback_paths=[])
    assert not nowhere.exists()
    with pytest.raises(Exception, match="Fashion-MNIST not found"):
        nowhere.load()
