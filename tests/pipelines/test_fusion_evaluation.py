"""Evaluation of a fused model: each task scored on its own source's test rows, in
order, with regression values back in the label's units."""

import numpy as np
import pytest
import torch

from multitask_cnn.pipelines.data_prep.nodes import (
    build_model_input,
    compute_normalisation,
)
from multitask_cnn.pipelines.evaluation.nodes import compute_task_metrics, predict_test
from multitask_cnn.pipelines.multitask_training.nodes import train_multitask_model

TASKS = {
    "item": {
        "kind": "multiclass",
        "num_classes": 10,
        "source": "digits",
        "label": "digit",
    },
    "size": {"kind": "regression", "source": "manifest"},
}


def _source(n, seed, labels):
    rng = np.random.default_rng(seed)
    return {
        "images": rng.integers(0, 256, (n, 36, 36), dtype=np.uint8),
        "labels": labels,
    }


def test_each_task_is_scored_on_its_own_sources_rows_in_the_labels_units():
    rng = np.random.default_rng(0)
    sources = {
        "digits": {split: _source(n, i, {"digit": rng.integers(0, 10, n)})
                         for i, (split, n) in enumerate((("train", 60), ("val", 20), ("test", 30)))},
        "manifest": {split: _source(n, 10 + i, {"size": (1000 + 50 * rng.standard_normal(n)).astype(np.float32)})
                     for i, (split, n) in enumerate((("train", 40), ("val", 12), ("test", 17)))},
    }  # fmt: skip
    sources["manifest"]["test"]["labels"]["size"][[3, 8]] = (
        np.nan
    )  # no label: not scored
    stats = compute_normalisation(sources)
    train, val, test = build_model_input(sources)
    checkpoint, _, _ = train_multitask_model(
        train, val, stats, TASKS, {}, {"epochs": 1, "batch_size": 16, "device": "cpu"},
        {}, None, {"enabled": False},
    )  # fmt: skip
    assert checkpoint["normalisation"]["manifest"]["targets"]["size"][
        "mean"
    ] == pytest.approx(
        float(np.mean(sources["manifest"]["train"]["labels"]["size"])), rel=1e-6
    )
    predictions = predict_test(checkpoint, test, stats, TASKS, {"device": "cpu"})

    labels = sources["digits"]["test"]["labels"]["digit"]
    assert (
        predictions["item"]["y_true"].tolist() == labels.tolist()
    )  # every row, in order
    sizes = sources["manifest"]["test"]["labels"]["size"]
    kept = ~np.isnan(sizes)
    assert predictions["size"]["y_true"] == pytest.approx(
        sizes[kept], rel=1e-5
    )  # units
    assert (
        abs(np.mean(predictions["size"]["y_pred"]) - 1000) < 200
    )  # unscaled, near 1000
    metrics = compute_task_metrics(predictions, TASKS, checkpoint)
    assert metrics["test"]["size"]["n"] == 15 and metrics["labelled"]["size"] == {
        "train": 40, "val": 12, "test": 15}  # fmt: skip
    assert metrics["test"]["size"]["rmse"] == pytest.approx(
        float(np.sqrt(np.mean((predictions["size"]["y_pred"] - sizes[kept]) ** 2))),
        rel=1e-5,
    )
    assert (
        torch.is_tensor(test["manifest"]["images"])
        and test["manifest"]["images"].dtype == torch.uint8
    )
