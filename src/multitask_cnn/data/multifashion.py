"""MultiFashion (Pareto-MTL, Lin et al. 2019), built vectorised from Fashion-MNIST.

Each composite holds two items of different classes on a square canvas: one near
the top-left, one near the bottom-right, each moved inwards by up to ``max_shift``
pixels per axis; where they overlap the brighter pixel wins (pixel max). The tasks
``left`` and ``right`` are the two items' classes.

Train and validation composites must not share a source image (DESIGN.md, data
contract): split the source images into pools with :func:`split_pool` first, then
compose within each pool (``compose_multifashion(..., pool=...)``).
"""

from __future__ import annotations

import numpy as np

from multitask_cnn.seeds import numpy_generator

__all__ = [
    "derived_labels",
    "hide_labels",
    "compose_multifashion",
    "draw_pairs",
    "scatter_items",
    "split_pool",
    "train_val_pools",
]


def split_pool(
    labels: np.ndarray, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split the indices of ``labels`` into a train pool and a val pool, per class.

    Stratified: of each class's ``m`` images, ``round(val_fraction * m)`` chosen by
    ``rng.permutation`` go to the val pool, the rest to the train pool, so both pools
    keep the class balance of ``labels``. A per-class permutation rather than
    scikit-learn's ``train_test_split(stratify=...)``: it draws from the NumPy
    ``Generator`` it is given (scikit-learn wants an int or a legacy ``RandomState``),
    fixes every class's count exactly, and keeps the library on NumPy alone.

    Returns sorted int64 ``(train_idx, val_idx)``; disjoint, together every index.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(
            f"val_fraction={val_fraction} must lie strictly between 0 and 1"
        )
    val_parts = []
    for cls in np.unique(labels):  # sorted, so the draws do not depend on label order
        members = np.flatnonzero(labels == cls)
        n_val = int(round(val_fraction * len(members)))
        val_parts.append(rng.permutation(members)[:n_val])
    val_idx = np.sort(np.concatenate(val_parts)).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels), dtype=np.int64), val_idx)
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise ValueError(
            f"val_fraction={val_fraction} of {len(labels)} images leaves the train or "
            "the val pool empty; use more images or a val_fraction nearer 0.5"
        )
    return train_idx, val_idx


def train_val_pools(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The project's split of the official train images (``labels``) into a train
    pool and a val pool: :func:`split_pool` on the seed's ``val_pool`` stream. Every
    consumer (MultiFashion, the pretraining source task) uses this one split, so no
    val-pool image is ever trained on."""
    return split_pool(labels, val_fraction, numpy_generator(seed, "val_pool"))


def draw_pairs(
    labels: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` index pairs ``(i, j)`` into ``labels`` with different classes."""
    if len(np.unique(labels)) < 2:
        raise ValueError("need at least two classes to draw pairs of different classes")
    first = rng.integers(0, len(labels), size=n)
    second = rng.integers(0, len(labels), size=n)
    clash = labels[first] == labels[second]
    while clash.any():  # redraw only the clashes; ~10% per round for 10 classes
        second[clash] = rng.integers(0, len(labels), size=int(clash.sum()))
        clash = labels[first] == labels[second]
    return first, second


def _place(
    items: np.ndarray, rows: np.ndarray, cols: np.ndarray, canvas_size: int
) -> np.ndarray:
    """Paste ``items`` (N, h, w) at per-item offsets, one vectorised pass per offset."""
    n, height, width = items.shape
    canvas = np.zeros((n, canvas_size, canvas_size), dtype=items.dtype)
    for row in np.unique(rows):
        for col in np.unique(cols):
            mask = (rows == row) & (cols == col)
            if mask.any():
                canvas[mask, row : row + height, col : col + width] = items[mask]
    return canvas


def compose_multifashion(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    rng: np.random.Generator,
    canvas_size: int = 36,
    max_shift: int = 4,
    *,
    pool: np.ndarray | None = None,
    min_shift: int = 0,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Build ``n`` composites from ``images`` (N, h, w) uint8 and their ``labels``.

    ``pool`` holds the indices into ``images`` that composites may use (default: all).
    Each item moves inwards by ``min_shift`` to ``max_shift`` pixels per axis.
    Returns uint8 canvases ``(n, canvas_size, canvas_size)``, int64 labels
    ``{"left": (n,), "right": (n,)}`` and the int64 ``source_index`` ``(n, 2)``: for
    each composite, the indices into ``images`` of its left and its right item.
    """
    _, height, width = images.shape
    slack = canvas_size - max(height, width)
    if slack < max_shift:
        raise ValueError(
            f"canvas_size={canvas_size} leaves {slack} px around {height}x{width} items; "
            f"max_shift={max_shift} needs a canvas of at least {max(height, width) + max_shift}"
        )
    if not 0 <= min_shift <= max_shift:
        raise ValueError(
            f"min_shift={min_shift} must lie in [0, max_shift={max_shift}]"
        )
    pool = np.arange(len(labels)) if pool is None else np.asarray(pool, dtype=np.int64)
    first, second = draw_pairs(labels[pool], n, rng)
    left, right = pool[first], pool[second]
    shifts = rng.integers(min_shift, max_shift + 1, size=(4, n))
    top_left = _place(images[left], shifts[0], shifts[1], canvas_size)
    bottom_right = _place(
        images[right], slack - shifts[2], slack - shifts[3], canvas_size
    )
    canvas = np.maximum(top_left, bottom_right)
    tasks = {
        "left": labels[left].astype(np.int64),
        "right": labels[right].astype(np.int64),
    }
    return canvas, tasks, np.stack([left, right], axis=1).astype(np.int64)


def scatter_items(
    images: np.ndarray, rng: np.random.Generator, canvas_size: int = 36
) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``images`` (N, h, w) alone on a square canvas at a random position.

    The single-item source task of pretraining: the same canvas as MultiFashion, each
    item's top-left corner drawn uniformly from every position that keeps it whole.
    Returns uint8 canvases ``(N, canvas_size, canvas_size)`` and the int64 offsets
    ``(N, 2)`` (row, column).
    """
    n, height, width = images.shape
    slack = canvas_size - max(height, width)
    if slack < 0:
        raise ValueError(
            f"canvas_size={canvas_size} is smaller than the {height}x{width} items"
        )
    offsets = rng.integers(0, slack + 1, size=(n, 2))
    canvas = _place(images, offsets[:, 0], offsets[:, 1], canvas_size)
    return canvas, offsets.astype(np.int64)


FOOTWEAR = (5, 7, 9)  # Fashion-MNIST classes Sandal, Sneaker, Ankle boot


def derived_labels(
    canvas: np.ndarray, labels: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Two more labels per composite, so that every task kind has a real target:

    - ``footwear`` (binary, int64 0/1): either item is a sandal, sneaker or ankle boot;
    - ``ink`` (regression, float32): mean pixel intensity of the canvas in [0, 1].
    """
    footwear = np.isin(labels["left"], FOOTWEAR) | np.isin(labels["right"], FOOTWEAR)
    ink = canvas.reshape(len(canvas), -1).mean(axis=1, dtype=np.float64) / 255.0
    return {"footwear": footwear.astype(np.int64), "ink": ink.astype(np.float32)}


def hide_labels(
    labels: dict[str, np.ndarray], fractions: dict[str, float], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Mark ``fractions[name]`` of each named label missing (``-1`` for class ids,
    NaN for real values), rows drawn from ``rng``; other labels are returned as they are."""
    hidden = dict(labels)
    for name, fraction in fractions.items():
        values = labels[name].copy()
        n_hidden = int(round(fraction * len(values)))
        rows = rng.choice(len(values), size=n_hidden, replace=False)
        values[rows] = np.nan if np.issubdtype(values.dtype, np.floating) else -1
        hidden[name] = values
    return hidden
