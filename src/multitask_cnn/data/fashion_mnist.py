"""Find and read the real Fashion-MNIST IDX files.

Search order (DESIGN.md): the project's raw folder, the Debian/Ubuntu package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), then, only when
explicitly allowed, torchvision's download into the raw folder.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multitask_cnn.errors import DataFileError, UserError

__all__ = [
    "FashionMNIST",
    "FashionMNISTNotFoundError",
    "find_fashion_mnist",
    "read_fashion_mnist",
]

logger = logging.getLogger(__name__)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


class FashionMNISTNotFoundError(UserError, FileNotFoundError):
    """No folder holds all four Fashion-MNIST files."""


@dataclass(frozen=True)
class FashionMNIST:
    """The official splits: uint8 images ``(N, 28, 28)`` and int64 labels ``(N,)``."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # the folder the files were read from


def _file_in(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _complete(folder: Path) -> bool:
    return all(_file_in(folder, stem) for stem in FILES.values())


def _download(folder: Path) -> None:
    """Download with torchvision into ``folder`` (the one network path, opt-in)."""
    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

    logger.warning("Downloading Fashion-MNIST with torchvision into %s", folder)
    TorchvisionFashionMNIST(
        root=str(folder / "_torchvision"), train=True, download=True
    )
    TorchvisionFashionMNIST(
        root=str(folder / "_torchvision"), train=False, download=True
    )
    raw = folder / "_torchvision" / "FashionMNIST" / "raw"
    for stem in FILES.values():
        shutil.copy2(raw / stem, folder / stem)
    shutil.rmtree(folder / "_torchvision")


def find_fashion_mnist(
    search_dirs: list[str | Path], allow_download: bool = False
) -> Path:
    """Return the first folder in ``search_dirs`` that holds all four files.

    With ``allow_download``, a miss downloads into the first search folder.
    """
    folders = [Path(d) for d in search_dirs]
    for folder in folders:
        if _complete(folder):
            return folder
    if allow_download and folders:
        folders[0].mkdir(parents=True, exist_ok=True)
        _download(folders[0])
        return folders[0]
    tried = "\n".join(
        f"  - {f} ({'missing' if not f.exists() else 'incomplete'})" for f in folders
    )
    raise FashionMNISTNotFoundError(
        "Fashion-MNIST not found. Looked for "
        f"{', '.join(FILES.values())} (optionally .gz) in:\n{tried}\n"
        "Fix: `apt-get install dataset-fashion-mnist`, copy the four files into the "
        "first folder, or allow a download with `--params allow_download=true`."
    )


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array of ``ndim`` dimensions; anything else raises
    :class:`DataFileError` naming the file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            data = stream.read()
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise DataFileError(f"{path}: cannot read it ({error})") from None
    magic = int.from_bytes(data[0:4], "big") if len(data) >= 4 else 0
    if magic >> 8 != 0x08 or magic & 0xFF != ndim:  # 0x08 = unsigned byte
        raise DataFileError(
            f"{path}: not an unsigned-byte IDX file of {ndim} dimension(s) (magic "
            f"{magic:#x}, expected {0x0800 | ndim:#x}); it may be damaged: replace it"
        )
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    array = np.frombuffer(data, dtype=np.uint8, offset=min(len(data), 4 + 4 * ndim))
    if array.size != int(np.prod(shape)):
        raise DataFileError(
            f"{path}: the header says {shape} values, the file holds {array.size} "
            "(truncated or damaged): replace it"
        )
    return array.reshape(shape)


def _check(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    where = f"{folder}: {split} split"
    if images.shape[1:] != (28, 28):
        height, width = images.shape[1:]
        raise DataFileError(
            f"{where}: images are {height}x{width}, Fashion-MNIST's are 28x28"
        )
    if len(images) == 0:
        raise DataFileError(f"{where}: no images")
    if len(images) != len(labels):
        raise DataFileError(f"{where}: {len(images)} images but {len(labels)} labels")
    bad = np.flatnonzero(labels >= len(CLASSES))
    if len(bad):
        raise DataFileError(
            f"{where}: label {int(labels[bad[0]])} at row {int(bad[0])} "
            f"({len(bad)} such rows); Fashion-MNIST's labels are 0..{len(CLASSES) - 1}"
        )


def read_fashion_mnist(folder: str | Path) -> FashionMNIST:
    """Read the four IDX files (gzipped or not) from ``folder``."""
    folder = Path(folder)
    arrays = {}
    for (split, part), stem in FILES.items():
        path = _file_in(folder, stem)
        if path is None:
            raise FashionMNISTNotFoundError(f"{folder / stem}: missing")
        array = _read_idx(path, ndim=3 if part == "images" else 1)
        arrays[f"{split}_{part}"] = (
            array.astype(np.int64) if part == "labels" else array
        )
    for split in ("train", "test"):
        _check(folder, split, arrays[f"{split}_images"], arrays[f"{split}_labels"])
    return FashionMNIST(**arrays, source=str(folder))
