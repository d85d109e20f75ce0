import numpy as np
import pytest

from multitask_cnn.data.multifashion import (
    compose_multifashion,
    draw_pairs,
    scatter_items,
    split_pool,
)


def _placements(item: np.ndarray, low: int, high: int, size: int = 36) -> np.ndarray:
    """``item`` pasted at every offset in ``[low, high]^2`` of a blank canvas."""
    h, w = item.shape
    offsets = [(r, c) for r in range(low, high + 1) for c in range(low, high + 1)]
    out = np.zeros((len(offsets), size, size), item.dtype)
    for k, (r, c) in enumerate(offsets):
        out[k, r : r + h, c : c + w] = item
    return out


def _follows_the_recipe(
    canvas: np.ndarray, left: np.ndarray, right: np.ndarray
) -> bool:
    """Is ``canvas`` the pixel max of ``left`` at an offset in [0, 4]^2 and ``right``
    at one in [4, 8]^2 (36x36 canvas, 28x28 items, max_shift 4)?"""
    both = np.maximum(_placements(left, 0, 4)[:, None], _placements(right, 4, 8)[None])
    return bool((both == canvas).all(axis=(2, 3)).any())


def test_pairs_always_have_different_classes(fashion_mnist_small):
    rng = np.random.default_rng(0)
    first, second = draw_pairs(fashion_mnist_small.train_labels, 5000, rng)
    labels = fashion_mnist_small.train_labels
    assert (labels[first] != labels[second]).all()


def test_composites_match_the_pareto_mtl_recipe(fashion_mnist_small):
    images, labels = fashion_mnist_small.train_images, fashion_mnist_small.train_labels
    canvas, tasks, source = compose_multifashion(
        images, labels, 300, np.random.default_rng(1)
    )
    assert canvas.shape == (300, 36, 36) and canvas.dtype == np.uint8
    assert set(tasks) == {"left", "right"}
    assert (tasks["left"] != tasks["right"]).all()
    assert tasks["left"].dtype == np.int64
    assert source.shape == (300, 2) and source.dtype == np.int64
    np.testing.assert_array_equal(tasks["left"], labels[source[:, 0]])
    np.testing.assert_array_equal(tasks["right"], labels[source[:, 1]])
    # the returned source images, placed by the recipe, give the canvas back
    for k in range(0, 300, 13):
        assert _follows_the_recipe(
            canvas[k], images[source[k, 0]], images[source[k, 1]]
        )
    # and a wrong source does not (so the check above can fail)
    assert not _follows_the_recipe(
        canvas[0], images[source[1, 0]], images[source[0, 1]]
    )


def test_pool_limits_the_source_images(fashion_mnist_small):
    images, labels = fashion_mnist_small.train_images, fashion_mnist_small.train_labels
    pool = np.arange(1000, 1600)
    canvas, tasks, source = compose_multifashion(
        images, labels, 400, np.random.default_rng(2), pool=pool
    )
    assert np.isin(source, pool).all()  # indices into `images`, not into the pool
    np.testing.assert_array_equal(tasks["right"], labels[source[:, 1]])
    for k in range(0, 400, 40):
        assert _follows_the_recipe(
            canvas[k], images[source[k, 0]], images[source[k, 1]]
        )


def test_same_seed_same_data_other_seed_other_data(fashion_mnist_small):
    args = (fashion_mnist_small.train_images, fashion_mnist_small.train_labels, 100)
    a, la, sa = compose_multifashion(*args, np.random.default_rng(7))
    b, lb, sb = compose_multifashion(*args, np.random.default_rng(7))
    c, _, sc = compose_multifashion(*args, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la["right"], lb["right"])
    np.testing.assert_array_equal(sa, sb)
    assert not np.array_equal(a, c) and not np.array_equal(sa, sc)


def test_canvas_too_small_for_the_shift_is_refused(fashion_mnist_small):
    with pytest.raises(ValueError, match="canvas_size=30"):
        compose_multifashion(fashion_mnist_small.train_images, fashion_mnist_small.train_labels,
                             10, np.random.default_rng(0), canvas_size=30, max_shift=4)  # fmt: skip


def test_min_shift_moves_every_item_at_least_that_far_in():
    # class 0 items are flat 50, class 1 items flat 200: a pixel of exactly 50 shows
    # where a class-0 item lies alone
    images = np.repeat(np.array([50, 200], dtype=np.uint8), 20)[:, None, None]
    images = np.broadcast_to(images, (40, 28, 28)).copy()
    labels = np.repeat(np.array([0, 1]), 20)
    canvas, tasks, _ = compose_multifashion(images, labels, 200, np.random.default_rng(3),
                                            max_shift=8, min_shift=5)  # fmt: skip
    for k in np.flatnonzero(tasks["left"] == 0):  # the top-left item is the flat 50
        rows, cols = np.nonzero(canvas[k] == 50)
        assert rows.min() >= 5 and cols.min() >= 5  # moved in by 5 to 8 px per axis
    for k in np.flatnonzero(tasks["right"] == 0):  # the bottom-right item is
        rows, cols = np.nonzero(canvas[k] == 50)
        assert rows.max() <= 35 - 5 and cols.max() <= 35 - 5
    with pytest.raises(ValueError, match="min_shift=5 must lie in"):
        compose_multifashion(images, labels, 5, np.random.default_rng(0), min_shift=5)


@pytest.mark.parametrize("val_fraction", [0.1, 0.25, 0.5])
def test_val_pool_is_disjoint_and_stratified(fashion_mnist_small, val_fraction):
    labels = fashion_mnist_small.train_labels
    train_idx, val_idx = split_pool(labels, val_fraction, np.random.default_rng(0))
    assert train_idx.dtype == val_idx.dtype == np.int64
    assert np.intersect1d(train_idx, val_idx).size == 0
    np.testing.assert_array_equal(
        np.union1d(train_idx, val_idx), np.arange(len(labels))
    )
    per_class = np.bincount(labels, minlength=10)
    in_val = np.bincount(labels[val_idx], minlength=10)
    assert (np.abs(in_val - val_fraction * per_class) <= 1).all(), (in_val, per_class)


def test_val_pool_is_seeded(fashion_mnist_small):
    labels = fashion_mnist_small.train_labels
    a = split_pool(labels, 0.2, np.random.default_rng(5))[1]
    b = split_pool(labels, 0.2, np.random.default_rng(5))[1]
    c = split_pool(labels, 0.2, np.random.default_rng(6))[1]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_val_pool_needs_images_on_both_sides():
    with pytest.raises(ValueError, match="val_fraction=0.1 of 3 images"):
        split_pool(np.array([0, 1, 2]), 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_pool(np.array([0, 1, 2]), 1.0, np.random.default_rng(0))


def test_scatter_items_places_each_whole_item_at_a_random_position(fashion_mnist_small):
    items = fashion_mnist_small.train_images[:200]
    canvas, offsets = scatter_items(items, np.random.default_rng(0), canvas_size=36)
    assert canvas.shape == (200, 36, 36) and canvas.dtype == np.uint8
    assert (
        offsets.min() == 0 and offsets.max() == 8
    )  # every position that keeps it whole
    for i in range(0, 200, 37):
        row, col = offsets[i]
        assert np.array_equal(canvas[i, row : row + 28, col : col + 28], items[i])
        assert canvas[i].sum() == items[i].sum()  # nothing else on the canvas
    with pytest.raises(
        ValueError, match="canvas_size=20 is smaller than the 28x28 items"
    ):
        scatter_items(items, np.random.default_rng(0), canvas_size=20)
