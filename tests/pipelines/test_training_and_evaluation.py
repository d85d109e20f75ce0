import json

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import CSVDataset

from multitask_cnn.io import TorchDataset
from multitask_cnn.pipelines import evaluation, multitask_training

TRAINING = {"epochs": 2, "batch_size": 64, "seed": 1, "device": "cpu"}


@pytest.fixture
def catalog(model_inputs, tasks_params, tmp_path):
    train, val, test = model_inputs
    return DataCatalog({
        "model_input_train": MemoryDataset(train), "model_input_val": MemoryDataset(val),
        "model_input_test": MemoryDataset(test),
        "params:tasks": MemoryDataset(tasks_params),
        "params:model": MemoryDataset({"backbone": "convnet"}),
        "params:training": MemoryDataset(TRAINING),
        "params:evaluation": MemoryDataset({"device": "cpu"}),
        "multitask_checkpoint": TorchDataset(str(tmp_path / "checkpoint.pt")),
        "task_metrics": JSONDataset(filepath=str(tmp_path / "metrics.json")),
        "training_history": CSVDataset(filepath=str(tmp_path / "history.csv")),
    })  # fmt: skip


def test_train_then_evaluate_in_memory(catalog, tmp_path):
    pipeline = multitask_training.create_pipeline() + evaluation.create_pipeline()
    SequentialRunner().run(pipeline, catalog)

    checkpoint = catalog.load("multitask_checkpoint")  # round-trips through the file
    assert set(checkpoint) == {"model", "optimizer", "epoch", "n_parameters", "config"}
    assert checkpoint["config"]["model"]["backbone"] == "convnet"
    assert "block1.0.weight" in {k.removeprefix("shared.") for k in checkpoint["model"]}

    history = catalog.load("training_history")
    assert len(history) == 2 and history["train.loss"].notna().all()

    metrics = catalog.load("task_metrics")["test"]
    for task in ("left", "right"):
        assert 0.1 < metrics[task]["accuracy"] <= 1 and 0 < metrics[task]["f1_macro"] <= 1
        assert metrics[task]["n"] == 400
    json.dumps(metrics)  # JSON-serialisable as saved

    mlflow_metrics = catalog.load("test_metrics")
    assert mlflow_metrics["test.left.accuracy"]["value"] == metrics["left"]["accuracy"]
    assert set(mlflow_metrics) == {f"test.{t}.{m}" for t in ("left", "right")
                                   for m in ("accuracy", "f1_macro")}  # fmt: skip
    figures = catalog.load("confusion_matrices")
    assert set(figures) == {"confusion_matrix_left.png", "confusion_matrix_right.png"}
    axes = figures["confusion_matrix_left.png"].axes[0]
    assert axes.images[0].get_array().sum() == 400
    assert [t.get_text() for t in axes.get_yticklabels()][-2:] == ["Bag", "Ankle boot"]


def test_evaluation_refuses_tasks_the_model_was_not_trained_on(catalog):
    SequentialRunner().run(multitask_training.create_pipeline(), catalog)
    catalog["params:tasks"] = MemoryDataset({
        "left": {"kind": "multiclass", "num_classes": 10},
        "other": {"kind": "multiclass", "num_classes": 10, "label": "right"},
    })  # fmt: skip
    with pytest.raises(ValueError, match=r"tasks \['other'\] are not in the checkpoint"):
        SequentialRunner().run(evaluation.create_pipeline(), catalog)
