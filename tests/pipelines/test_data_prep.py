import numpy as np
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset

from multitask_cnn.data.fashion_mnist import FashionMNIST
from multitask_cnn.data.multifashion import split_pool
from multitask_cnn.pipelines.data_prep import create_pipeline
from multitask_cnn.pipelines.data_prep.nodes import compose_splits, report_class_balance
from multitask_cnn.seeds import numpy_generator


def _assert_same_split(a: dict, b: dict) -> None:
    np.testing.assert_array_equal(a["images"], b["images"])
    np.testing.assert_array_equal(a["source_index"], b["source_index"])
    for task in ("left", "right"):
        np.testing.assert_array_equal(a["labels"][task], b["labels"][task])


def _lies_under(canvas: np.ndarray, item: np.ndarray, low: int, high: int) -> bool:
    """Is ``item`` covered by ``canvas`` (a pixel max) at an offset in [low, high]^2?"""
    h, w = item.shape
    offsets = [(r, c) for r in range(low, high + 1) for c in range(low, high + 1)]
    return any((canvas[r : r + h, c : c + w] >= item).all() for r, c in offsets)


def test_pipeline_builds_normalised_splits(
    fashion_mnist_small, data_prep_params, tmp_path
):
    catalog = DataCatalog({
        "fashion_mnist": MemoryDataset(fashion_mnist_small),
        "params:data_prep": MemoryDataset(data_prep_params),
        "normalisation_stats": JSONDataset(filepath=str(tmp_path / "stats.json")),
    })  # fmt: skip
    SequentialRunner().run(create_pipeline(), catalog)
    train, val, test = (
        catalog.load(f"model_input_{s}") for s in ("train", "val", "test")
    )
    assert (
        train["images"].shape == (900, 1, 36, 36)
        and train["images"].dtype == torch.float32
    )
    assert val["images"].shape == (300, 1, 36, 36)
    assert test["images"].shape == (400, 1, 36, 36)
    assert train["labels"]["left"].dtype == torch.int64
    assert set(train) == {"images", "labels"}  # source_index stays out of the tensors
    # normalised with train statistics only: train is exactly standardised, test is not
    assert abs(train["images"].mean().item()) < 1e-4
    assert abs(train["images"].std().item() - 1) < 1e-3
    stats = catalog.load("normalisation_stats")
    assert stats["computed_on"] == "train" and stats["n_images"] == 900
    report = catalog.load("data_report")
    counts = report.groupby(["split", "label"])["count"].sum()
    assert counts["train", "left"] == 900 and counts["test", "right"] == 400
    assert counts["train", "footwear"] == 900 and counts["val", "ink"] == 300
    assert set(report["class_name"]) >= {"Sneaker", "Ankle boot", "footwear", "missing"}
    missing = report[report["class_id"] == -1].set_index(["split", "label"])["count"]
    assert missing.sum() == 0  # every label present unless missing_labels says so


def test_splits_draw_from_their_official_split_only(
    fashion_mnist_small, data_prep_params
):
    # mark every official train image 50 and every test image 200 (labels stay real)
    marked = FashionMNIST(
        np.full_like(fashion_mnist_small.train_images, 50), fashion_mnist_small.train_labels,
        np.full_like(fashion_mnist_small.test_images, 200), fashion_mnist_small.test_labels,
        source="marked",
    )  # fmt: skip
    splits = compose_splits(marked, data_prep_params)
    assert set(np.unique(splits["train"]["images"])) == {0, 50}
    assert set(np.unique(splits["val"]["images"])) == {0, 50}
    assert set(np.unique(splits["test"]["images"])) == {0, 200}


def test_val_fraction_must_leave_both_splits(fashion_mnist_small):
    with pytest.raises(
        ValueError, match="val_fraction=0.0001 leaves no train or no val"
    ):
        compose_splits(
            fashion_mnist_small, {"n_train": 100, "n_test": 10, "val_fraction": 0.0001}
        )


def test_train_and_val_composites_share_no_source_image(
    fashion_mnist_small, data_prep_params
):
    splits = compose_splits(fashion_mnist_small, data_prep_params)
    train, val = splits["train"]["source_index"], splits["val"]["source_index"]
    assert train.shape == (900, 2) and val.shape == (300, 2)
    assert train.dtype == val.dtype == np.int64
    assert np.intersect1d(train, val).size == 0
    # val composites come from the seeded, stratified val pool of official train images
    seed, val_fraction = data_prep_params["seed"], data_prep_params["val_fraction"]
    rng = numpy_generator(seed, "val_pool")
    _, val_pool = split_pool(fashion_mnist_small.train_labels, val_fraction, rng)
    assert np.isin(val, val_pool).all() and not np.isin(train, val_pool).any()


def test_source_index_gives_each_composites_items(
    fashion_mnist_small, data_prep_params
):
    fm = fashion_mnist_small
    splits = compose_splits(fm, data_prep_params)
    for split, data in splits.items():
        images, labels = (
            (fm.test_images, fm.test_labels)
            if split == "test"
            else (fm.train_images, fm.train_labels)
        )
        source = data["source_index"]
        assert source.shape == (len(data["images"]), 2)
        assert 0 <= source.min() and source.max() < len(labels)
        np.testing.assert_array_equal(data["labels"]["left"], labels[source[:, 0]])
        np.testing.assert_array_equal(data["labels"]["right"], labels[source[:, 1]])
        for k in range(0, len(source), 50):
            assert _lies_under(data["images"][k], images[source[k, 0]], 0, 4)
            assert _lies_under(data["images"][k], images[source[k, 1]], 4, 8)


def test_n_test_does_not_move_train_or_val(fashion_mnist_small, data_prep_params):
    base = compose_splits(fashion_mnist_small, data_prep_params)
    other = compose_splits(fashion_mnist_small, {**data_prep_params, "n_test": 450})
    assert len(other["test"]["images"]) == 450
    _assert_same_split(base["train"], other["train"])
    _assert_same_split(base["val"], other["val"])


def test_n_train_does_not_move_test(fashion_mnist_small, data_prep_params):
    base = compose_splits(fashion_mnist_small, data_prep_params)
    other = compose_splits(fashion_mnist_small, {**data_prep_params, "n_train": 1600})
    assert len(other["train"]["images"]) == 1200 and len(other["val"]["images"]) == 400
    _assert_same_split(base["test"], other["test"])


def test_same_seed_same_splits_other_seed_other_splits(
    fashion_mnist_small, data_prep_params
):
    a = compose_splits(fashion_mnist_small, data_prep_params)
    b = compose_splits(fashion_mnist_small, data_prep_params)
    c = compose_splits(fashion_mnist_small, {**data_prep_params, "seed": 4})
    for split in ("train", "val", "test"):
        _assert_same_split(a[split], b[split])
        assert not np.array_equal(a[split]["images"], c[split]["images"])
        assert not np.array_equal(a[split]["source_index"], c[split]["source_index"])


def test_derived_labels_give_a_binary_and_a_regression_target(
    fashion_mnist_small, data_prep_params
):
    splits = compose_splits(fashion_mnist_small, data_prep_params)
    for data in splits.values():
        labels = data["labels"]
        footwear = np.isin(labels["left"], (5, 7, 9)) | np.isin(
            labels["right"], (5, 7, 9)
        )
        np.testing.assert_array_equal(labels["footwear"], footwear.astype(np.int64))
        ink = data["images"].reshape(len(data["images"]), -1).mean(axis=1) / 255
        np.testing.assert_allclose(labels["ink"], ink, rtol=1e-6)
        assert labels["ink"].dtype == np.float32 and 0 < labels["footwear"].mean() < 1


def test_missing_labels_hide_train_and_val_labels_only(
    fashion_mnist_small, data_prep_params
):
    params = data_prep_params | {"missing_labels": {"left": 0.5, "ink": 0.25}}
    splits = compose_splits(fashion_mnist_small, params)
    complete = compose_splits(fashion_mnist_small, data_prep_params)
    train, val, test = (
        splits["train"]["labels"],
        splits["val"]["labels"],
        splits["test"]["labels"],
    )
    assert (train["left"] == -1).sum() == 450 and (val["left"] == -1).sum() == 150
    assert np.isnan(train["ink"]).sum() == 225 and np.isnan(val["ink"]).sum() == 75
    assert (test["left"] >= 0).all() and not np.isnan(test["ink"]).any()
    # the labels that remain are the true ones; images and other labels do not move
    kept = train["left"] >= 0
    np.testing.assert_array_equal(
        train["left"][kept], complete["train"]["labels"]["left"][kept]
    )
    np.testing.assert_array_equal(train["right"], complete["train"]["labels"]["right"])
    np.testing.assert_array_equal(
        splits["train"]["images"], complete["train"]["images"]
    )
    report = report_class_balance(splits).set_index(["split", "label", "class_name"])[
        "count"
    ]
    assert (
        report["train", "left", "missing"] == 450
        and report["test", "left", "missing"] == 0
    )
    assert report["train", "ink", "missing"] == 225
    # each label has its own stream: hiding more of `left` moves no `ink` row
    more = compose_splits(
        fashion_mnist_small, params | {"missing_labels": {"left": 0.9, "ink": 0.25}}
    )
    np.testing.assert_array_equal(
        np.isnan(more["train"]["labels"]["ink"]), np.isnan(train["ink"])
    )
