"""MultiFashion (Pareto-MTL, Lin et al. 2019), built vectorised from Fashion-MNIST.

Each composite holds two items of different classes on a square canvas: one near
the top-left, one near the bottom-right, each moved inwards by up to ``max_shift``
pixels per axis; where they overlap the brighter pixel wins (pixel max). The tasks
``left`` and ``right`` are the two items' classes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["compose_multifashion", "draw_pairs"]


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
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Build ``n`` composites from ``images`` (N, h, w) uint8 and their ``labels``.

    Returns uint8 canvases ``(n, canvas_size, canvas_size)`` and int64 labels
    ``{"left": (n,), "right": (n,)}``.
    """
    _, height, width = images.shape
    slack = canvas_size - max(height, width)
    if slack < max_shift:
        raise ValueError(
            f"canvas_size={canvas_size} leaves {slack} px around {height}x{width} items; "
            f"max_shift={max_shift} needs a canvas of at least {max(height, width) + max_shift}"
        )
    left, right = draw_pairs(labels, n, rng)
    shifts = rng.integers(0, max_shift + 1, size=(4, n))
    top_left = _place(images[left], shifts[0], shifts[1], canvas_size)
    bottom_right = _place(
        images[right], slack - shifts[2], slack - shifts[3], canvas_size
    )
    canvas = np.maximum(top_left, bottom_right)
    return canvas, {"left": labels[left].astype(np.int64), "right": labels[right].astype(np.int64)}
