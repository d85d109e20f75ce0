import numpy as np
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset

from multitask_cnn.data.fashion_mnist import FashionMNIST
from multitask_cnn.data.multifashion import split_pool
from multitask_cnn.io import DigitsDataset
from multitask_cnn.pipelines.data_prep import create_pipeline
from multitask_cnn.pipelines.data_prep.nodes import (
    compose_splits,
    prepare_digits,
    report_class_balance,
)
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


TASKS = {
    "left": {"kind": "multiclass", "num_classes": 10},
    "right": {"kind": "multiclass", "num_classes": 10},
}
DIGIT = {"digit": {"kind": "multiclass", "num_classes": 10, "source": "digits"}}


def _run_pipeline(fashion_mnist, data_prep_params, tasks, tmp_path, pretraining=None):
    catalog = DataCatalog({
        "fashion_mnist": MemoryDataset(fashion_mnist),
        "digits": DigitsDataset(),
        "image_manifest": MemoryDataset(None),  # no manifest file: the entry loads None
        "params:data_prep": MemoryDataset(data_prep_params),
        "params:tasks": MemoryDataset(tasks),
        "params:pretraining": MemoryDataset(pretraining or {}),
        "normalisation_stats": JSONDataset(filepath=str(tmp_path / "stats.json")),
    })  # fmt: skip
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def test_pipeline_builds_uint8_model_input_and_train_statistics_per_source(
    fashion_mnist_small, data_prep_params, tmp_path
):
    catalog = _run_pipeline(
        fashion_mnist_small, data_prep_params, TASKS | DIGIT, tmp_path
    )
    train, val, test = (
        catalog.load(f"model_input_{s}") for s in ("train", "val", "test")
    )
    assert set(train) == set(val) == set(test) == {"multifashion", "digits"}
    stats = catalog.load("normalisation_stats")
    builds = {d[s]["build"] for d in (train, val, test) for s in d}
    assert builds == {stats[s]["build"] for s in stats} and len(builds) == 1
    raw = compose_splits(fashion_mnist_small, data_prep_params)
    for split, data in zip(("train", "val", "test"), (train, val, test), strict=True):
        mf = data["multifashion"]
        # source_index stays out of the tensors; build: which data_prep wrote it
        assert set(mf) == {"images", "labels", "build"}
        assert mf["images"].dtype == torch.uint8  # normalised when read, not here
        assert mf["images"].shape == (len(raw[split]["images"]), 1, 36, 36)
        assert torch.equal(mf["images"][:, 0], torch.from_numpy(raw[split]["images"]))
        assert set(mf["labels"]) == {"left", "right", "footwear", "ink"}
        assert mf["labels"]["left"].dtype == torch.int64
        assert mf["labels"]["ink"].dtype == torch.float32
        for name, labels in raw[split]["labels"].items():
            np.testing.assert_array_equal(mf["labels"][name].numpy(), labels)
    sizes = [len(d["multifashion"]["images"]) for d in (train, val, test)]
    assert sizes == [900, 300, 400]

    stats = catalog.load("normalisation_stats")
    assert set(stats) == {"multifashion", "digits"}
    mf_stats = stats["multifashion"]
    assert mf_stats["computed_on"] == "train" and mf_stats["n_images"] == 900
    pixels = raw["train"]["images"].astype(np.float64) / 255
    assert mf_stats["mean"] == pytest.approx(pixels.mean(), rel=1e-9)
    assert mf_stats["std"] == pytest.approx(pixels.std(), rel=1e-6)
    # normalised with train statistics only: train is exactly standardised, test is not
    normalised = (pixels - mf_stats["mean"]) / mf_stats["std"]
    assert abs(normalised.mean()) < 1e-6 and abs(normalised.std() - 1) < 1e-6
    assert mf_stats["mean"] != pytest.approx(
        raw["test"]["images"].mean() / 255, rel=1e-6
    )
    ink = raw["train"]["labels"]["ink"].astype(np.float64)
    assert mf_stats["targets"] == {  # real-valued labels only
        "ink": {"mean": pytest.approx(ink.mean()), "std": pytest.approx(ink.std()),
                "n": 900}
    }  # fmt: skip

    digits = [d["digits"] for d in (train, val, test)]
    labels = DigitsDataset().load()["labels"]
    per_class = np.bincount(labels)
    n_test = np.round(0.2 * per_class).astype(int)  # data_prep.digits.test_fraction
    n_val = np.round(0.25 * (per_class - n_test)).astype(int)  # data_prep.val_fraction
    expected = [per_class - n_test - n_val, n_val, n_test]
    for data, counts in zip(digits, expected, strict=True):
        assert set(data) == {"images", "labels", "build"}
        assert set(data["labels"]) == {"digit"}
        assert data["images"].dtype == torch.uint8
        assert data["images"].shape == (counts.sum(), 1, 36, 36)
        np.testing.assert_array_equal(np.bincount(data["labels"]["digit"]), counts)
        # a 28 px digit (data_prep.digits.item_size) centred on the 36 px canvas
        border = data["images"].clone()
        border[:, :, 4:32, 4:32] = 0
        assert border.max() == 0 and data["images"].max() > 0
    assert sum(len(d["images"]) for d in digits) == len(labels)
    pixels = digits[0]["images"].double() / 255
    assert stats["digits"]["mean"] == pytest.approx(pixels.mean().item(), rel=1e-9)
    assert stats["digits"]["std"] == pytest.approx(
        pixels.std(unbiased=False).item(), rel=1e-6
    )
    assert stats["digits"]["n_images"] == len(digits[0]["images"])
    assert stats["digits"]["targets"] == {}

    report = catalog.load("data_report")
    counts = report.groupby(["source", "split", "label"])["count"].sum()
    assert counts["multifashion", "train", "left"] == 900
    assert counts["multifashion", "test", "right"] == 400
    assert counts["multifashion", "train", "footwear"] == 900
    ink_rows = report[(report["label"] == "ink") & (report["split"] == "val")]
    columns = ["class_id", "class_name", "count", "labelled"]
    assert ink_rows[columns].to_dict("records") == [  # real-valued: missing rows only
        {"class_id": -1, "class_name": "missing", "count": 0, "labelled": 300}
    ]
    assert counts["digits", "test", "digit"] == n_test.sum()
    assert set(report["class_name"]) >= {"Sneaker", "Ankle boot", "footwear", "missing"}
    digit_names = set(report.loc[report["source"] == "digits", "class_name"])
    assert digit_names == {*map(str, range(10)), "missing"}
    missing = report[report["class_id"] == -1].set_index(["split", "label"])["count"]
    assert missing.sum() == 0  # every label present unless missing_labels says so
    labelled = report.groupby(["source", "split", "label"])["labelled"].unique()
    assert labelled["multifashion", "val", "left"].tolist() == [300]  # on every row
    assert labelled["digits", "train", "digit"].tolist() == [expected[0].sum()]


def test_only_the_sources_the_tasks_or_the_pretraining_read_are_prepared(
    fashion_mnist_small, data_prep_params, tmp_path
):
    catalog = _run_pipeline(fashion_mnist_small, data_prep_params, TASKS, tmp_path)
    assert set(catalog.load("model_input_train")) == {"multifashion"}
    assert set(catalog.load("normalisation_stats")) == {"multifashion"}
    assert set(catalog.load("data_report")["source"]) == {"multifashion"}
    digits_only = {"digits": DigitsDataset().load()}
    assert compose_splits(fashion_mnist_small, data_prep_params, DIGIT, {}) == {}
    assert prepare_digits(digits_only["digits"], data_prep_params, TASKS, {}) == {}
    # a pretraining on MultiFashion needs it even when no task reads it
    composed = compose_splits(fashion_mnist_small, data_prep_params, DIGIT,
                              {"source": "multifashion"})  # fmt: skip
    assert set(composed) == {"train", "val", "test"}
    # without a task spec (older callers), MultiFashion is composed as before
    _assert_same_split(
        composed["train"],
        compose_splits(fashion_mnist_small, data_prep_params)["train"],
    )


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
        ValueError, match="val_fraction=0.0001 of data_prep.n_train=100 leaves 0 val"
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
    table = report_class_balance({"multifashion": splits}, TASKS)
    report = table.set_index(["source", "split", "label", "class_name"])
    assert (
        report.loc[("multifashion", "train", "left", "missing"), "count"] == 450
        and report.loc[("multifashion", "test", "left", "missing"), "count"] == 0
    )
    assert report.loc[("multifashion", "train", "ink", "missing"), "count"] == 225
    assert report.loc[("multifashion", "train", "left", "missing"), "labelled"] == 450
    assert report.loc[("multifashion", "val", "ink", "missing"), "labelled"] == 225
    # each label has its own stream: hiding more of `left` moves no `ink` row
    more = compose_splits(
        fashion_mnist_small, params | {"missing_labels": {"left": 0.9, "ink": 0.25}}
    )
    np.testing.assert_array_equal(
        np.isnan(more["train"]["labels"]["ink"]), np.isnan(train["ink"])
    )
