import numpy as np
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset

from multitask_cnn.data.fashion_mnist import FashionMNIST
from multitask_cnn.pipelines.data_prep import create_pipeline
from multitask_cnn.pipelines.data_prep.nodes import compose_splits


def test_pipeline_builds_normalised_splits(fashion_mnist_small, data_prep_params, tmp_path):
    catalog = DataCatalog({
        "fashion_mnist": MemoryDataset(fashion_mnist_small),
        "params:data_prep": MemoryDataset(data_prep_params),
        "normalisation_stats": JSONDataset(filepath=str(tmp_path / "stats.json")),
    })  # fmt: skip
    SequentialRunner().run(create_pipeline(), catalog)
    train, val, test = (catalog.load(f"model_input_{s}") for s in ("train", "val", "test"))
    assert train["images"].shape == (900, 1, 36, 36) and train["images"].dtype == torch.float32
    assert val["images"].shape == (300, 1, 36, 36)
    assert test["images"].shape == (400, 1, 36, 36)
    assert train["labels"]["left"].dtype == torch.int64
    # normalised with train statistics only: train is exactly standardised, test is not
    assert abs(train["images"].mean().item()) < 1e-4
    assert abs(train["images"].std().item() - 1) < 1e-3
    stats = catalog.load("normalisation_stats")
    assert stats["computed_on"] == "train" and stats["n_images"] == 900
    report = catalog.load("data_report")
    counts = report.groupby(["split", "task"])["count"].sum()
    assert counts["train", "left"] == 900 and counts["test", "right"] == 400
    assert set(report["class_name"]) >= {"Sneaker", "Ankle boot"}


def test_splits_draw_from_their_official_split_only(fashion_mnist_small, data_prep_params):
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
    with pytest.raises(ValueError, match="val_fraction=0.0001 leaves no train or no val"):
        compose_splits(fashion_mnist_small, {"n_train": 100, "n_test": 10, "val_fraction": 0.0001})
