"""Bring-your-own images: a CSV manifest with an image-path column and one column per
label, read with pandas and checked row by row before any image is decoded.

An **empty cell** means "no label for this task": the row trains the other tasks and is
masked out of this one's loss and metrics. Labels follow the data contract: ``int64``
class ids (``-1`` = missing) for ``multiclass`` and ``binary``, ``float32`` (NaN =
missing) for ``regression``. Text class labels must be declared in the task's
``class_names`` (their order gives the ids); integer labels are ids ``0..n-1``.

Every error names the manifest row (0-based, as pandas counts; the CSV line is two
more with the header) and the column, and is raised before anything is decoded or
written.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import multiprocessing.context
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from PIL.Image import DecompressionBombError

from multitask_cnn.errors import UserError
from multitask_cnn.seeds import numpy_generator
from multitask_cnn.tasks import TaskSpec

from .tensors import labelled

__all__ = [
    "SPLITS",
    "ManifestError",
    "ManifestPlan",
    "decode_images",
    "plan_manifest",
    "split_rows",
]

SPLITS = ("train", "val", "test")  # every split source's names


class ManifestError(UserError, ValueError):
    """A manifest that cannot train the tasks; the message names the row and column."""


@dataclass(frozen=True)
class ManifestPlan:
    """A checked manifest: which files, which labels, which split, nothing decoded."""

    paths: list[Path]  # absolute, inside the root
    labels: dict[str, np.ndarray]  # label column -> int64 / float32 (N,)
    splits: dict[str, np.ndarray]  # split -> row indices
    channels: int
    size: int

    def key(self) -> str:
        """A short hash of what the decoded images depend on: the files (path, size,
        modification time), their order per split, channels and size."""
        digest = hashlib.blake2b(digest_size=8)
        digest.update(f"{self.channels}:{self.size}".encode())
        for split, rows in self.splits.items():
            digest.update(split.encode() + rows.tobytes())
        for path in self.paths:
            stat = path.stat()
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()

    @property
    def decoded_bytes(self) -> int:
        """Memory the decoded uint8 images take: N × C × size × size."""
        return len(self.paths) * self.channels * self.size * self.size


def _where(row: int, column: str) -> str:
    return f"row {row} (CSV line {row + 2}), column {column!r}"


def _parse_class(values: pd.Series, column: str, spec: TaskSpec) -> np.ndarray:
    """Class ids of a classification column: text from ``class_names``, or integers."""
    n = spec.n_classes
    names = list(spec.class_names or [])
    ids = np.full(len(values), -1, dtype=np.int64)
    for row, cell in enumerate(values):
        if cell == "":
            continue
        if cell in names:
            ids[row] = names.index(cell)
            continue
        try:
            number = float(cell)
        except ValueError:
            number = math.nan
        if number.is_integer() and 0 <= number < n:
            ids[row] = int(number)
            continue
        declared = f"the declared classes {names}" if names else f"class ids 0..{n - 1}"
        hint = "" if names else " (text labels: list them in the task's class_names)"
        raise ManifestError(
            f"manifest {_where(row, column)}: label {cell!r} is not one of "
            f"{declared}{hint}"
        )
    return ids


def _parse_real(values: pd.Series, column: str) -> np.ndarray:
    out = np.full(len(values), np.nan, dtype=np.float32)
    for row, cell in enumerate(values):
        if cell == "":
            continue
        try:
            out[row] = float(cell)
        except ValueError:
            raise ManifestError(
                f"manifest {_where(row, column)}: regression target {cell!r} is not a "
                "number (leave the cell empty for no label)"
            ) from None
        if not math.isfinite(out[row]):
            raise ManifestError(
                f"manifest {_where(row, column)}: regression target {cell!r} is not "
                "finite (leave the cell empty for no label)"
            )
    return out


def _resolve(root: Path, cell: str, row: int, column: str) -> Path:
    if cell == "":
        raise ManifestError(f"manifest {_where(row, column)}: no image path")
    path = (root / cell).resolve()
    if not path.is_relative_to(root):
        raise ManifestError(
            f"manifest {_where(row, column)}: image path {cell!r} lies outside the "
            f"dataset root {str(root)!r} (symbolic links resolved); paths must stay "
            "inside it"
        )
    if not path.is_file():
        raise ManifestError(
            f"manifest {_where(row, column)}: image {cell!r} does not exist ({path})"
        )
    return path


def split_rows(
    table: pd.DataFrame,
    split_column: str | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Row indices per split: from ``split_column`` (train / val / test; None: the
    column ``split`` when the manifest has one), else a seeded random split by the two
    fractions."""
    n = len(table)
    if split_column is not None and split_column not in table.columns:
        raise ManifestError(
            f"the manifest has no split column {split_column!r} "
            f"(data_prep.manifest.split_column); its columns are {list(table.columns)}"
        )
    split_column = split_column or ("split" if "split" in table.columns else None)
    if split_column is not None:
        values = table[split_column].str.strip().str.lower()
        bad = ~values.isin(SPLITS)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ManifestError(
                f"manifest {_where(row, split_column)}: split {table[split_column].iloc[row]!r} "
                f"is not one of {list(SPLITS)}"
            )
        rows = {s: np.flatnonzero((values == s).to_numpy()) for s in SPLITS}
    else:
        order = numpy_generator(seed, "manifest_split").permutation(n)
        n_test = int(round(test_fraction * n))
        n_val = int(round(val_fraction * (n - n_test)))
        rows = {"test": np.sort(order[:n_test]),
                "val": np.sort(order[n_test : n_test + n_val]),
                "train": np.sort(order[n_test + n_val :])}  # fmt: skip
    empty = [s for s in SPLITS if len(rows[s]) == 0]
    if empty:
        how = f"column {split_column!r}" if split_column else "the split fractions"
        raise ManifestError(
            f"the manifest's {how} leave(s) no rows for {empty} (of {n} rows); every "
            "split needs at least one"
        )
    return {s: rows[s].astype(np.int64) for s in SPLITS}


def plan_manifest(
    table: pd.DataFrame,
    root: str | os.PathLike[str],
    specs: Mapping[str, TaskSpec],
    *,
    image_column: str,
    split_column: str | None,
    channels: int,
    size: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> ManifestPlan:
    """Check the whole manifest against the tasks that read it (``specs``: task ->
    spec, each ``label`` a column) and plan its decoding; raises
    :class:`ManifestError` naming row and column. ``table`` holds every cell as text
    (empty = missing)."""
    if len(table) == 0:
        raise ManifestError("the manifest has no rows")
    columns = list(table.columns)
    wanted = {image_column: "the image column (data_prep.manifest.image_column)"}
    wanted |= {spec.label_name(task): f"task {task!r}" for task, spec in specs.items()}
    for column, user in wanted.items():
        if column not in columns:
            raise ManifestError(
                f"the manifest has no column {column!r} (needed by {user}); its "
                f"columns are {columns}"
            )
    root = Path(root).resolve()
    paths = [
        _resolve(root, cell.strip(), row, image_column)
        for row, cell in enumerate(table[image_column])
    ]
    labels: dict[str, np.ndarray] = {}
    readers: dict[str, tuple[str, TaskSpec]] = {}
    for task, spec in specs.items():
        column = spec.label_name(task)
        if column in readers:  # one column, one meaning
            other, first = readers[column]
            if (first.kind, first.n_classes, first.class_names) != (
                spec.kind, spec.n_classes, spec.class_names):  # fmt: skip
                raise ManifestError(
                    f"tasks {other!r} and {task!r} both read manifest column {column!r} "
                    "but declare other kinds or classes; give them the same, or one column each"
                )
            continue
        readers[column] = (task, spec)
        values = table[column].str.strip()
        labels[column] = (
            _parse_class(values, column, spec)
            if spec.task_kind.is_classifier
            else _parse_real(values, column)
        )
    splits = split_rows(table, split_column, val_fraction, test_fraction, seed)
    for column, values in labels.items():  # to learn, to stop early, to be scored
        for split, rows in splits.items():
            if not labelled(values[rows]).any():
                raise ManifestError(
                    f"manifest column {column!r} has no label in the {split} split "
                    f"({len(rows)} rows); every split needs labelled rows of each task"
                )
    _one_split_per_image(paths, splits, image_column)
    return ManifestPlan(paths, labels, splits, channels, size)


def _one_split_per_image(
    paths: Sequence[Path], splits: Mapping[str, np.ndarray], column: str
) -> None:
    """Train, val and test never share an image (a file listed twice stays in one)."""
    first: dict[Path, tuple[str, int]] = {}
    for split, rows in splits.items():
        for row in rows:
            seen = first.setdefault(paths[row], (split, int(row)))
            if seen[0] != split:
                raise ManifestError(
                    f"manifest {_where(int(row), column)}: image {str(paths[row])!r} is in "
                    f"the {split} split, and in the {seen[0]} split at row {seen[1]}; "
                    "an image may be in one split only"
                )


def _decode_one(path: Path, channels: int, size: int) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _decode_block(
    paths: Sequence[Path], rows: Sequence[int], channels: int, size: int, column: str
) -> np.ndarray:
    """One block of images (in a worker process, or in this one)."""
    out = np.empty((len(paths), channels, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            out[i] = _decode_one(path, channels, size)
        except (
            OSError,
            UnidentifiedImageError,
            DecompressionBombError,
            ValueError,
        ) as error:
            raise ManifestError(
                f"manifest {_where(rows[i], column)}: cannot read image {str(path)!r}: {error}"
            ) from None
    return out


def _start_method() -> multiprocessing.context.BaseContext:
    # fork starts workers in milliseconds; they only run Pillow and NumPy
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def decode_images(
    paths: Sequence[Path],
    channels: int,
    size: int,
    *,
    workers: int = 0,
    out: np.ndarray | None = None,
    rows: Sequence[int] | None = None,
    column: str = "image",
    block: int = 256,
) -> np.ndarray:
    """Decode ``paths`` (PNG, JPEG, ...; grey or colour) to uint8 ``(N, channels, size,
    size)``: converted to grey (``L``) or RGB and resized (bilinear) with Pillow.

    ``workers`` > 1 decodes blocks of ``block`` images in that many processes (threads
    do not help: for small images the work is mostly Python, under the GIL).
    ``out`` receives the images (e.g. a memory-mapped cache); ``rows`` and ``column``
    name each path's manifest row and column for errors. An unreadable image raises :class:`ManifestError`
    naming its row and file.
    """
    n = len(paths)
    if out is None:
        out = np.empty((n, channels, size, size), dtype=np.uint8)
    rows = list(range(n)) if rows is None else list(rows)
    spans = [(start, min(start + block, n)) for start in range(0, n, block)]
    jobs = [(paths[a:b], rows[a:b], channels, size, column) for a, b in spans]
    if workers > 1 and len(spans) > 1:
        with ProcessPoolExecutor(
            min(workers, len(spans)), mp_context=_start_method()
        ) as pool:
            for (a, b), images in zip(spans, pool.map(_decode_block, *zip(*jobs, strict=True)),
                                      strict=True):  # fmt: skip
                out[a:b] = images
    else:
        for (a, b), job in zip(spans, jobs, strict=True):
            out[a:b] = _decode_block(*job)
    return out


def manifest_splits(
    plan: ManifestPlan,
    decode: Callable[
        [dict[str, tuple[list[Path], np.ndarray]]], Mapping[str, np.ndarray]
    ],
) -> dict[str, dict[str, Any]]:
    """Raw splits ``{split: {"images", "labels"}}`` of a checked manifest; ``decode``
    turns ``{split: (paths, manifest rows)}`` into each split's uint8 images."""
    parts = {
        split: ([plan.paths[i] for i in rows], rows)
        for split, rows in plan.splits.items()
    }
    images = decode(parts)
    return {
        split: {"images": images[split],
                "labels": {c: v[rows] for c, v in plan.labels.items()}}
        for split, rows in plan.splits.items()
    }  # fmt: skip
