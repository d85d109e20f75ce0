import numpy as np
import pytest

from multitask_cnn.data.multifashion import compose_multifashion, draw_pairs


def test_pairs_always_have_different_classes(fashion_mnist_small):
    rng = np.random.default_rng(0)
    first, second = draw_pairs(fashion_mnist_small.train_labels, 5000, rng)
    labels = fashion_mnist_small.train_labels
    assert (labels[first] != labels[second]).all()


def test_composites_match_the_pareto_mtl_recipe(fashion_mnist_small):
    images, labels = fashion_mnist_small.train_images, fashion_mnist_small.train_labels
    canvas, tasks = compose_multifashion(images, labels, 300, np.random.default_rng(1))
    assert canvas.shape == (300, 36, 36) and canvas.dtype == np.uint8
    assert set(tasks) == {"left", "right"}
    assert (tasks["left"] != tasks["right"]).all()
    assert tasks["left"].dtype == np.int64
    # Recover each item's placement: the left item sits at offset (r, c) in [0, 4]^2,
    # the right one at [4, 8]^2, and the canvas is their pixel-wise max.
    rng = np.random.default_rng(1)
    left_idx, right_idx = draw_pairs(labels, 300, rng)
    shifts = rng.integers(0, 5, size=(4, 300))
    for k in range(0, 300, 37):
        expected = np.zeros((36, 36), np.uint8)
        r, c = shifts[0, k], shifts[1, k]
        expected[r : r + 28, c : c + 28] = images[left_idx[k]]
        other = np.zeros((36, 36), np.uint8)
        r2, c2 = 8 - shifts[2, k], 8 - shifts[3, k]
        assert 4 <= r2 <= 8 and 4 <= c2 <= 8
        other[r2 : r2 + 28, c2 : c2 + 28] = images[right_idx[k]]
        np.testing.assert_array_equal(canvas[k], np.maximum(expected, other))
        assert tasks["left"][k] == labels[left_idx[k]]


def test_same_seed_same_data_other_seed_other_data(fashion_mnist_small):
    args = (fashion_mnist_small.train_images, fashion_mnist_small.train_labels, 100)
    a, la = compose_multifashion(*args, np.random.default_rng(7))
    b, lb = compose_multifashion(*args, np.random.default_rng(7))
    c, _ = compose_multifashion(*args, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la["right"], lb["right"])
    assert not np.array_equal(a, c)


def test_canvas_too_small_for_the_shift_is_refused(fashion_mnist_small):
    with pytest.raises(ValueError, match="canvas_size=30"):
        compose_multifashion(fashion_mnist_small.train_images, fashion_mnist_small.train_labels,
                             10, np.random.default_rng(0), canvas_size=30, max_shift=4)  # fmt: skip
