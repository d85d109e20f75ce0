import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_DATA_PREP
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from multitask_cnn.config import parse_tasks
from multitask_cnn.io import (
    CheckpointSetDataset,
    CSVDataset,
    DigitsDataset,
    JSONDataset,
    TextDataset,
    TorchDataset,
    TrainProgressDataset,
)
from multitask_cnn.models import build_model
from multitask_cnn.models.checkpoint import CheckpointMismatchError
from multitask_cnn.pipelines import (
    baselines,
    data_prep,
    evaluation,
    multitask_training,
    pretraining,
    weight_transfer,
)
from multitask_cnn.pipelines.multitask_training.nodes import train_multitask_model
from multitask_cnn.provenance import fingerprint
from multitask_cnn.tasks import LabelError
from multitask_cnn.training import TrainState, build_optimizer, get_weighting
from multitask_cnn.training.memory import PeakMemory

TRAINING = {"epochs": 2, "batch_size": 64, "seed": 1, "device": "cpu"}


def _train_and_evaluate(tasks):
    return (
        baselines.create_pipeline(tasks)
        + multitask_training.create_pipeline()
        + evaluation.create_pipeline()
    )


def _baseline_entries(tasks, folder: Path) -> dict:
    """The catalog entries of each task's baseline branch (conf/base's factories)."""
    entries = {
        "baseline_checkpoints": CheckpointSetDataset(
            str(folder / "baselines" / "index.json")
        )
    }
    for task in tasks:
        path = str(folder / "baselines" / f"{task}.pt")
        entries |= {
            f"stl.{task}.baseline_checkpoint": TorchDataset(path),
            f"stl.{task}.previous_baseline": TorchDataset(path, missing_ok=True),
            f"stl.{task}.baseline_progress": TrainProgressDataset(
                str(folder / "baseline_progress" / f"{task}.pt")
            ),
        }
    return entries


PROVENANCE = {"git.commit": "abc123", "git.dirty": "false", "mlflow.run_id": "run42"}
STATS = {"mean": 0.1, "std": 0.3, "computed_on": "train", "n_images": 900}
NORMALISATION = {"multifashion": STATS}  # data_prep's statistics, per source


def _catalog(model_inputs, tasks_params: dict, tmp_path: Path) -> DataCatalog:
    train, val, test = model_inputs
    return DataCatalog({
        "model_input_train": MemoryDataset(train), "model_input_val": MemoryDataset(val),
        "model_input_test": MemoryDataset(test), "normalisation_stats": MemoryDataset(NORMALISATION),
        "provenance": MemoryDataset(PROVENANCE),
        "params:tasks": MemoryDataset(tasks_params),
        "params:model": MemoryDataset({"backbone": "convnet"}),
        "params:training": MemoryDataset(TRAINING),
        "params:evaluation": MemoryDataset({"device": "cpu"}),
        "params:transfer": MemoryDataset({"enabled": False}),
        "initial_state": TorchDataset(str(tmp_path / "initial_state.pt"), missing_ok=True),
        "multitask_checkpoint": TorchDataset(str(tmp_path / "checkpoint.pt")),
        **_baseline_entries(tasks_params, tmp_path),
        "baseline_metrics": JSONDataset(str(tmp_path / "baseline_metrics.json")),
        "comparison": JSONDataset(str(tmp_path / "comparison.json")),
        "train_state": TorchDataset(str(tmp_path / "train_state.pt")),
        "training_progress": TrainProgressDataset(str(tmp_path / "progress.pt")),
        "task_metrics": JSONDataset(str(tmp_path / "metrics.json")),
        "training_history": CSVDataset(str(tmp_path / "history.csv")),
        "efficiency_report": JSONDataset(str(tmp_path / "efficiency.json")),
        "efficiency_table": TextDataset(str(tmp_path / "efficiency.md")),
        "efficiency_metrics": MemoryDataset(),
    })  # fmt: skip


@pytest.fixture
def catalog(model_inputs, tasks_params, tmp_path):
    return _catalog(model_inputs, tasks_params, tmp_path)


@pytest.fixture(scope="module")
def trained_once(model_inputs, tmp_path_factory) -> Path:
    """A folder with the baselines and the multi-task model trained on the catalog's
    data, once for the tests that only evaluate them."""
    folder = tmp_path_factory.mktemp("trained")
    tasks = {t: {"kind": "multiclass", "num_classes": 10} for t in ("left", "right")}
    SequentialRunner().run(
        baselines.create_pipeline(tasks) + multitask_training.create_pipeline(),
        _catalog(model_inputs, tasks, folder),
    )
    return folder


@pytest.fixture
def trained(catalog, trained_once, tmp_path):
    """:func:`catalog`, with what :func:`trained_once` wrote in place."""
    shutil.copytree(trained_once, tmp_path, dirs_exist_ok=True)
    return catalog


def test_the_efficiency_report_compares_the_models_it_measured(catalog, tasks_params):
    SequentialRunner().run(_train_and_evaluate(tasks_params), catalog)
    report = catalog.load("efficiency_report")
    checkpoint, baselines = (
        catalog.load("multitask_checkpoint"),
        catalog.load("baseline_checkpoints"),
    )
    multitask, together = report["multitask"], report["single_task"]["together"]
    assert multitask["parameters"] == checkpoint["n_parameters"]
    assert together["parameters"] == sum(b["n_parameters"] for b in baselines.values())
    assert multitask["train_seconds"] == pytest.approx(checkpoint["train_seconds"])
    assert together["train_seconds"] == pytest.approx(
        sum(b["train_seconds"] for b in baselines.values())
    )
    per_task = report["single_task"]["per_task"]
    assert together["latency_ms"] == pytest.approx(
        sum(t["latency_ms"] for t in per_task.values())
    )
    assert together["throughput"] == pytest.approx(
        1 / sum(1 / t["throughput"] for t in per_task.values())
    )
    # peak memory: measured on this CPU (Linux: resident-set high-water mark), carried
    # by the checkpoints for training; the single-task models train one at a time
    assert multitask["train_peak_memory_mb"] == checkpoint["train_peak_memory_mb"] > 0
    assert together["train_peak_memory_mb"] == max(
        b["train_peak_memory_mb"] for b in baselines.values()
    )
    assert report["memory_method"]["training"] == PeakMemory.CPU
    assert multitask["inference_peak_memory_mb"] >= 0
    assert together["inference_peak_memory_mb"] >= 0
    for key in (
        "parameters",
        "macs_per_image",
        "train_seconds",
        "latency_ms",
        "throughput",
        "train_peak_memory_mb",
    ):
        assert report["ratios"][key] == pytest.approx(multitask[key] / together[key])
    assert report["ratios"]["parameters"] < 0.6  # the convnet shared by two tasks
    assert report["delta_m"] == catalog.load("comparison")["delta_m"]
    metrics = catalog.load("efficiency_metrics")
    assert metrics["efficiency.parameters.ratio"]["value"] == pytest.approx(
        report["ratios"]["parameters"]
    )
    table = catalog.load("efficiency_table")
    assert "| peak memory, training (lower is better) |" in table
    assert f"Peak memory: training, {PeakMemory.CPU}" in table
    assert (
        f"| {multitask['parameters']:,} | {together['parameters']:,} | {report['ratios']['parameters']:.2f} |"
        in table
    )


def test_train_then_evaluate_in_memory(catalog, model_inputs, tasks_params):
    SequentialRunner().run(_train_and_evaluate(tasks_params), catalog)

    checkpoint = catalog.load("multitask_checkpoint")  # round-trips through the file
    assert checkpoint["format_version"] == 3
    assert checkpoint["provenance"] == PROVENANCE
    assert checkpoint["normalisation"] == {
        "multifashion": STATS | {"targets": {}}
    }  # the sources it read (no regression task: no target statistics)
    read = ("images", "labels")  # not the data_prep build: other data changes it
    assert checkpoint["input_fingerprint"] == {
        "train": fingerprint(
            {"multifashion": {k: model_inputs[0]["multifashion"][k] for k in read}}
        ),
        "val": fingerprint(
            {"multifashion": {k: model_inputs[1]["multifashion"][k] for k in read}}
        ),
    }
    assert checkpoint["labelled"] == {
        t: {"train": 900, "val": 300} for t in ("left", "right")
    }
    config = checkpoint["config"]  # effective: defaults filled in
    assert config["model"]["backbone_args"]["dropout"] == 0.3
    assert config["training"]["epochs"] == 2 and config["training"]["lr"] == 0.001
    assert config["tasks"]["left"]["label"] == "left"

    history = catalog.load("training_history")
    assert history["epoch"].tolist() == [1, 2] and history["train.loss"].notna().all()
    assert checkpoint["epoch"] == history["val.loss"].idxmin() + 1
    assert checkpoint["val_loss"] == pytest.approx(history["val.loss"].min())

    # the train state restores into a fresh TrainState
    specs = parse_tasks(catalog.load("params:tasks"))
    model = build_model(specs, "convnet")
    state = TrainState(model, build_optimizer("adam", model.parameters(), lr=1e-3),
                       get_weighting("equal", specs))  # fmt: skip
    state.load_state_dict(catalog.load("train_state"))
    assert state.epoch == 2 and state.history[1]["val.loss"] == pytest.approx(
        history["val.loss"][1]
    )

    metrics = catalog.load("task_metrics")
    for task in ("left", "right"):
        assert (
            0.1 < metrics["test"][task]["accuracy"] <= 1
            and 0 < metrics["test"][task]["f1_macro"] <= 1
        )
        assert metrics["test"][task]["n"] == 400
    assert metrics["labelled"] == {
        t: {"train": 900, "val": 300, "test": 400} for t in ("left", "right")
    }
    assert metrics["checkpoint"]["provenance"]["mlflow.run_id"] == "run42"
    assert metrics["checkpoint"]["epoch"] == checkpoint["epoch"]

    mlflow_metrics = catalog.load("test_metrics")
    assert (
        mlflow_metrics["test.left.accuracy"]["value"]
        == metrics["test"]["left"]["accuracy"]
    )
    assert set(mlflow_metrics) == {f"test.{t}.{m}" for t in ("left", "right")
                                   for m in ("accuracy", "f1_macro")} | {
        f"labelled.{t}.{s}" for t in ("left", "right") for s in ("train", "val", "test")}  # fmt: skip
    assert mlflow_metrics["labelled.left.train"]["value"] == 900
    figures = catalog.load("confusion_matrices")
    assert set(figures) == {"confusion_matrix_left.png", "confusion_matrix_right.png"}
    axes = figures["confusion_matrix_left.png"].axes[0]
    assert axes.images[0].get_array().sum() == 400
    assert [t.get_text() for t in axes.get_yticklabels()][-2:] == ["Bag", "Ankle boot"]


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        ({"left": {"kind": "multiclass", "num_classes": 10},
          "other": {"kind": "multiclass", "num_classes": 10, "label": "right"}},
         ["task 'other' is in the spec but not in the checkpoint",
          "task 'right' is in the checkpoint but not in the spec"]),
        ({"left": {"kind": "multiclass", "num_classes": 10},
          "right": {"kind": "multiclass", "num_classes": 10, "label": "left"}},
         ["task 'right': label is 'left' in the spec, 'right' in the checkpoint"]),
        ({"left": {"kind": "multiclass", "num_classes": 12},
          "right": {"kind": "multiclass", "num_classes": 10}},
         ["task 'left': num_classes is 12 in the spec, 10 in the checkpoint"]),
    ],
)  # fmt: skip
def test_evaluation_refuses_a_checkpoint_trained_for_other_tasks(
    trained, tasks, expected
):
    catalog = trained
    catalog["params:tasks"] = MemoryDataset(tasks)
    with pytest.raises(CheckpointMismatchError) as error:
        SequentialRunner().run(
            evaluation.create_pipeline().only_nodes("predict_test"), catalog
        )
    for line in expected:
        assert line in str(error.value)


def test_evaluation_refuses_test_data_normalised_otherwise(trained):
    catalog = trained
    catalog["normalisation_stats"] = MemoryDataset(
        {"multifashion": STATS | {"mean": 0.2}}
    )
    with pytest.raises(
        CheckpointMismatchError,
        match="source 'multifashion': the data is normalised with mean 0.2, "
        "the model was trained with 0.1",
    ):
        SequentialRunner().run(evaluation.create_pipeline(), catalog)


def test_evaluation_builds_the_heads_the_checkpoint_was_trained_with(
    trained, tasks_params
):
    catalog = trained
    wider = {t: spec | {"head_hidden": [32]} for t, spec in tasks_params.items()}
    catalog["params:tasks"] = MemoryDataset(
        wider
    )  # a head shape the model does not have
    SequentialRunner().run(evaluation.create_pipeline(), catalog)
    assert catalog.load("test_metrics")["test.left.accuracy"]["value"] > 0.1


def test_labels_that_do_not_fit_the_spec_stop_training_before_it_starts(
    model_inputs, tasks_params
):
    multifashion = model_inputs[0]["multifashion"]
    left = multifashion["labels"]["left"].clone()
    left[7] = 12
    train = {"multifashion": {"images": multifashion["images"],
                              "labels": dict(multifashion["labels"], left=left)}}  # fmt: skip
    with pytest.raises(
        LabelError, match="task 'left' .* train multifashion row 7 has label 12"
    ):
        train_multitask_model(
            train, model_inputs[1], NORMALISATION, tasks_params, {}, TRAINING, PROVENANCE,
            None, {"enabled": False},
        )  # fmt: skip
    # a task whose source the model input lacks is named before training, too
    digits = {"digit": {"kind": "multiclass", "num_classes": 10, "source": "digits"}}
    with pytest.raises(
        ValueError, match="the train model input has no source 'digits'"
    ):
        train_multitask_model(
            model_inputs[0], model_inputs[1], NORMALISATION, tasks_params | digits, {},
            TRAINING, PROVENANCE, None, {"enabled": False},
        )  # fmt: skip


def test_three_task_kinds_with_missing_labels_end_to_end(fashion_mnist_small, tmp_path):
    """Data with hidden labels -> pretraining -> weight transfer -> training ->
    evaluation -> metrics, for a multiclass, a binary and a regression task."""
    tasks = {
        "left": {"kind": "multiclass", "num_classes": 10},
        "shoes": {"kind": "binary", "label": "footwear"},
        "ink": {"kind": "regression"},
    }
    missing = {"left": 0.5, "footwear": 0.3, "ink": 0.4}
    catalog = DataCatalog({
        "fashion_mnist": MemoryDataset(fashion_mnist_small),
        "digits": DigitsDataset(),
        "image_manifest": MemoryDataset(None),  # no manifest file: the entry loads None
        "params:data_prep": MemoryDataset(SMALL_DATA_PREP | {"missing_labels": missing}),
        "provenance": MemoryDataset(PROVENANCE),
        "params:tasks": MemoryDataset(tasks),
        "params:model": MemoryDataset({"backbone": "lenet"}),
        "params:training": MemoryDataset(TRAINING | {"epochs": 3, "lr": 0.003}),
        "params:evaluation": MemoryDataset({"device": "cpu"}),
        "model_input_train": TorchDataset(str(tmp_path / "train.pt")),
        "normalisation_stats": JSONDataset(str(tmp_path / "stats.json")),
        "training_history": CSVDataset(str(tmp_path / "history.csv")),
        "training_progress": TrainProgressDataset(str(tmp_path / "progress.pt")),
        **_baseline_entries(tasks, tmp_path),
        "pretraining_progress": TrainProgressDataset(str(tmp_path / "pretraining_progress.pt")),
        "task_metrics": JSONDataset(str(tmp_path / "metrics.json")),
        "params:pretraining": MemoryDataset({"n_train": 600}),
        "params:transfer": MemoryDataset({"freeze_epochs": 1}),
        "pretraining_file": TorchDataset(str(tmp_path / "mine.pt"), missing_ok=True),
        "previous_pretrained": TorchDataset(str(tmp_path / "pretrained.pt"), missing_ok=True),
        "initial_state": TorchDataset(str(tmp_path / "initial_state.pt")),
    })  # fmt: skip
    SequentialRunner().run(
        data_prep.create_pipeline() + pretraining.create_pipeline()
        + weight_transfer.create_pipeline() + _train_and_evaluate(tasks), catalog,
    )  # fmt: skip
    report = catalog.load("transfer_report")
    assert report["counts"]["tensors_transferred"] == 4  # conv1, conv2 (fc left out)
    assert {e["target"] for e in report["tensors"] if e["status"] == "skipped"} == {
        f"heads.{t}.0.{p}" for t in ("left", "shoes", "ink") for p in ("weight", "bias")
    } | {"shared.fc.1.weight", "shared.fc.1.bias"}  # fmt: skip

    model_input_train = catalog.load("model_input_train")
    assert set(model_input_train) == {"multifashion"}  # no task reads the digits
    train_labels = model_input_train["multifashion"]["labels"]
    assert (train_labels["left"] == -1).sum() == 450 and torch.isnan(
        train_labels["ink"]
    ).sum() == 360
    ink_scaling = catalog.load("normalisation_stats")["multifashion"]["targets"]["ink"]
    labelled_ink = train_labels["ink"][~torch.isnan(train_labels["ink"])].double()
    assert ink_scaling["n"] == 540
    assert ink_scaling["mean"] == pytest.approx(labelled_ink.mean().item())
    assert ink_scaling["std"] == pytest.approx(labelled_ink.std(unbiased=False).item())
    history = catalog.load("training_history")
    assert history["transfer.frozen_parameters"].tolist() == [5840, 0, 0]
    # the baselines start from the same transfer (Δm compares sharing, both transferred)
    assert set(report["baselines"]) == {"left", "shoes", "ink"}
    assert report["baselines"]["ink"]["parameters_transferred"] == 5840
    for task, baseline in catalog.load("baseline_checkpoints").items():
        assert baseline["config"]["transfer"]["source"] == report["source"], task
        assert baseline["config"]["transfer"]["freeze_epochs"] == 1
    for column in (
        "train.left.loss",
        "val.shoes.loss",
        "val.ink.loss",
        "val.ink.mae",
        "val.shoes.accuracy",
    ):
        assert np.isfinite(history[column]).all(), column
    assert history["val.loss"].tolist() == pytest.approx(
        (
            history["val.left.loss"]
            + history["val.shoes.loss"]
            + history["val.ink.loss"]
        ).tolist()
    )
    metrics = catalog.load("task_metrics")["test"]
    assert (
        set(metrics["left"]) == {"accuracy", "f1_macro", "n"}
        and metrics["left"]["n"] == 400
    )
    assert set(metrics["ink"]) == {"mae", "rmse", "n"} and metrics["ink"]["n"] == 400
    # in the label's units (ink is in [0, 1]), not in the standardised training units
    assert 0 < metrics["ink"]["mae"] <= metrics["ink"]["rmse"] < ink_scaling["std"]
    assert metrics["shoes"]["accuracy"] > 0.5 and metrics["left"]["accuracy"] > 0.15
    assert all(math.isfinite(v) for m in metrics.values() for v in m.values())
    mlflow_metrics = catalog.load("test_metrics")
    assert {"test.ink.mae", "test.ink.rmse", "test.shoes.f1_macro",
            "test.left.accuracy"} <= set(mlflow_metrics)  # fmt: skip
    assert not any(name.endswith(".mse") for name in mlflow_metrics)
    assert catalog.load("task_metrics")["labelled"] == {
        "left": {"train": 450, "val": 150, "test": 400},
        "shoes": {"train": 630, "val": 210, "test": 400},
        "ink": {"train": 540, "val": 180, "test": 400},
    }
    assert set(catalog.load("confusion_matrices")) == {"confusion_matrix_left.png",
                                                       "confusion_matrix_shoes.png"}  # fmt: skip


def test_delta_m_compares_with_baselines_that_are_reused_until_their_inputs_change(
    catalog, tasks_params
):
    SequentialRunner().run(_train_and_evaluate(tasks_params), catalog)
    first = catalog.load("baseline_checkpoints")
    assert set(first) == {"left", "right"} and not first["left"]["reused"]
    assert first["left"]["config"]["tasks"] == {
        "left": first["left"]["config"]["tasks"]["left"]
    }
    assert first["left"]["config"]["model"]["shared_stages"] is None  # all its own
    assert first["left"]["format_version"] == 3
    assert first["left"]["normalisation"] == {"multifashion": STATS | {"targets": {}}}
    assert first["left"]["labelled"] == {"left": {"train": 900, "val": 300}}
    stl = catalog.load("baseline_metrics")["test"]
    mtl = catalog.load("task_metrics")["test"]
    comparison = catalog.load("comparison")
    expected = {t: 100 * ((mtl[t]["accuracy"] - stl[t]["accuracy"]) / stl[t]["accuracy"]
                          + (mtl[t]["f1_macro"] - stl[t]["f1_macro"]) / stl[t]["f1_macro"]) / 2
                for t in ("left", "right")}  # fmt: skip
    assert comparison["per_task"] == pytest.approx(expected)
    assert comparison["delta_m"] == pytest.approx(sum(expected.values()) / 2)
    logged = catalog.load("comparison_metrics")
    assert logged["delta_m"]["value"] == pytest.approx(comparison["delta_m"])
    assert logged["stl.left.accuracy"]["value"] == stl["left"]["accuracy"]

    # unchanged inputs: the baselines are reused, not retrained
    SequentialRunner().run(baselines.create_pipeline(tasks_params), catalog)
    second = catalog.load("baseline_checkpoints")
    assert second["left"]["reused"] and second["right"]["reused"]
    for key, value in first["left"]["model"].items():
        assert torch.equal(value, second["left"]["model"][key])

    # other `left` labels retrain the `left` baseline only
    train = catalog.load("model_input_train")
    multifashion = train["multifashion"]
    labels = dict(multifashion["labels"], left=multifashion["labels"]["left"].clone())
    labels["left"][:10] = -1
    catalog["model_input_train"] = MemoryDataset(
        {"multifashion": {"images": multifashion["images"], "labels": labels}}
    )
    SequentialRunner().run(baselines.create_pipeline(tasks_params), catalog)
    relabelled = catalog.load("baseline_checkpoints")
    assert not relabelled["left"]["reused"] and relabelled["right"]["reused"]
    catalog["model_input_train"] = MemoryDataset(train)

    # a changed budget retrains
    catalog["params:training"] = MemoryDataset(TRAINING | {"epochs": 1})
    SequentialRunner().run(baselines.create_pipeline(tasks_params), catalog)
    third = catalog.load("baseline_checkpoints")
    assert (
        not third["left"]["reused"]
        and third["left"]["baseline_key"] != first["left"]["baseline_key"]
    )
