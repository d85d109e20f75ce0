"""Resume after interruption: the training nodes (multi-task, baselines, pretraining)
save their progress after every epoch; stopped by SIGTERM after a step, then run again,
they end exactly as an uninterrupted run; progress made under other settings is
refused, naming what differs."""

from __future__ import annotations

import os
import signal

import mlflow
import pytest
import torch
from conftest import SMALL_DATA_PREP
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from mlflow.tracking import MlflowClient

from multitask_cnn.io import TorchDataset, TrainProgress, TrainProgressDataset
from multitask_cnn.pipelines import baselines
from multitask_cnn.pipelines.baselines import nodes as baselines_nodes
from multitask_cnn.pipelines.baselines.nodes import train_baseline
from multitask_cnn.pipelines.multitask_training import nodes
from multitask_cnn.pipelines.multitask_training.nodes import train_multitask_model
from multitask_cnn.pipelines.pretraining import nodes as pretraining_nodes
from multitask_cnn.pipelines.pretraining.nodes import (
    build_pretraining_data,
    pretrain_backbone,
)
from multitask_cnn.training import TrainingStopped

# dropout and shuffling on, so that a resume must restore RNGs and data order
MODEL = {"backbone": "convnet", "backbone_args": {"dropout": 0.3}}
TRAINING = {"epochs": 3, "batch_size": 64, "seed": 3, "device": "cpu"}


def _train(model_inputs, stats, tasks, progress, training=TRAINING):
    return train_multitask_model(model_inputs[0], model_inputs[1], stats, tasks, MODEL,
                                 training, {}, None, {"enabled": False}, progress)  # fmt: skip


def test_stopped_by_sigterm_then_resumed_ends_as_an_uninterrupted_run(
    model_inputs, normalisation_stats, tasks_params, tmp_path, monkeypatch
):
    reference, history, _ = _train(model_inputs, normalisation_stats, tasks_params,
                                   TrainProgress(tmp_path / "reference.pt"))  # fmt: skip
    assert not (tmp_path / "reference.pt").exists()  # finished: the progress is removed

    def sigterm_after_epoch_2(epoch, record):
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # at epoch 2's end, before its save

    progress = TrainProgress(tmp_path / "progress.pt")
    monkeypatch.setattr(nodes, "log_epoch_metrics", sigterm_after_epoch_2)
    with pytest.raises(TrainingStopped, match=r"SIGTERM after epoch 2$"):
        _train(model_inputs, normalisation_stats, tasks_params, progress)
    saved = progress.read()
    assert saved["state"]["epoch"] == 2  # saved, then stopped
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler given back

    monkeypatch.undo()
    resumed, resumed_history, _ = _train(
        model_inputs, normalisation_stats, tasks_params, progress
    )
    assert not progress.path.exists()
    assert resumed["epoch"] == reference["epoch"]
    for name, tensor in reference["model"].items():  # bit for bit
        assert torch.equal(tensor, resumed["model"][name]), name
    columns = [c for c in history.columns if c != "epoch_seconds"]
    assert resumed_history[columns].equals(history[columns])  # all three epochs


def test_a_stop_asked_after_the_last_step_still_stops_the_run(
    model_inputs, normalisation_stats, tasks_params, tmp_path, monkeypatch
):
    def sigterm_at_the_last_epoch_end(epoch, record):
        if epoch == TRAINING["epochs"]:  # after the last step: during logging
            os.kill(os.getpid(), signal.SIGTERM)

    progress = TrainProgress(tmp_path / "progress.pt")
    monkeypatch.setattr(nodes, "log_epoch_metrics", sigterm_at_the_last_epoch_end)
    with pytest.raises(TrainingStopped, match="after epoch 3"):
        _train(model_inputs, normalisation_stats, tasks_params, progress)
    assert progress.read()["state"]["epoch"] == 3  # saved before stopping: nothing lost
    monkeypatch.undo()
    checkpoint, history, _ = _train(
        model_inputs, normalisation_stats, tasks_params, progress
    )
    assert list(history["epoch"]) == [1, 2, 3] and not progress.path.exists()


def test_progress_from_other_settings_is_refused_naming_them(
    model_inputs, normalisation_stats, tasks_params, tmp_path, monkeypatch
):
    def stop_after_epoch_1(epoch, record):
        os.kill(os.getpid(), signal.SIGTERM)

    progress = TrainProgress(tmp_path / "progress.pt")
    monkeypatch.setattr(nodes, "log_epoch_metrics", stop_after_epoch_1)
    with pytest.raises(TrainingStopped):
        _train(model_inputs, normalisation_stats, tasks_params, progress)
    monkeypatch.undo()
    changed = TRAINING | {"lr": 0.01}
    with pytest.raises(
        ValueError,
        match=r"training\.lr: 0\.001 then, 0\.01 now.*training\.resume=false",
    ):
        _train(model_inputs, normalisation_stats, tasks_params, progress, changed)
    assert progress.path.exists()  # refused: nothing lost
    # a larger epoch budget is not a difference: it continues
    checkpoint, history, _ = _train(model_inputs, normalisation_stats, tasks_params, progress,
                                    TRAINING | {"epochs": 4})  # fmt: skip
    assert list(history["epoch"]) == [1, 2, 3, 4]
    # resume: false starts over (and replaces the progress when it stops again)
    monkeypatch.setattr(nodes, "log_epoch_metrics", stop_after_epoch_1)
    with pytest.raises(TrainingStopped):
        _train(model_inputs, normalisation_stats, tasks_params, progress, changed)
    with pytest.raises(TrainingStopped):
        _train(model_inputs, normalisation_stats, tasks_params, progress,
               TRAINING | {"resume": False})  # fmt: skip
    assert progress.read()["identity"]["training"]["lr"] == 0.001


def _baselines_catalog(model_inputs, stats, tasks, folder):
    """The baselines pipeline's catalog, its per-task entries as conf/base's factories
    make them."""
    entries = {
        "model_input_train": MemoryDataset(model_inputs[0]),
        "model_input_val": MemoryDataset(model_inputs[1]),
        "normalisation_stats": MemoryDataset(stats), "provenance": MemoryDataset({}),
        "initial_state": MemoryDataset(None), "params:tasks": MemoryDataset(tasks),
        "params:model": MemoryDataset(MODEL), "params:training": MemoryDataset(TRAINING),
        "params:transfer": MemoryDataset({"enabled": False}),
    }  # fmt: skip
    for task in tasks:
        path = str(folder / f"{task}.pt")
        entries |= {
            f"stl.{task}.baseline_checkpoint": TorchDataset(path),
            f"stl.{task}.previous_baseline": TorchDataset(path, missing_ok=True),
            f"stl.{task}.baseline_progress": TrainProgressDataset(str(folder / f"{task}.progress.pt")),
        }  # fmt: skip
    return DataCatalog(entries)


def _task_of(record) -> str:
    return next(k for k in record if k.startswith("stl.")).split(".")[1]  # stl.<task>.*


def test_baselines_resume_keeping_the_finished_one_and_continuing_the_next(
    model_inputs, normalisation_stats, tasks_params, tmp_path, monkeypatch
):
    """Stopped during the second baseline (its own node): the rerun reuses the first
    (saved when its node finished, not trained again), continues the second after its
    saved epoch, and both end bit for bit as in an uninterrupted run."""
    pipeline = baselines.create_pipeline(tasks_params)
    args = (model_inputs, normalisation_stats, tasks_params)
    SequentialRunner().run(
        pipeline, reference := _baselines_catalog(*args, tmp_path / "ref")
    )
    assert not list((tmp_path / "ref").glob("*.progress.pt"))
    trained = []

    def stop_in_the_second_baseline(epoch, record):
        trained.append(_task_of(record))
        if trained.count("right") == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    catalog = _baselines_catalog(*args, tmp_path / "run")
    monkeypatch.setattr(
        baselines_nodes, "log_epoch_metrics", stop_in_the_second_baseline
    )
    with pytest.raises(TrainingStopped, match="after epoch 2"):
        SequentialRunner().run(pipeline, catalog)
    assert (tmp_path / "run" / "left.pt").exists()  # its node had finished
    saved = TrainProgress(tmp_path / "run" / "right.progress.pt").read()
    assert saved["part"] == "right" and saved["state"]["epoch"] == 2

    trained.clear()
    monkeypatch.setattr(baselines_nodes, "log_epoch_metrics",
                        lambda epoch, record: trained.append(_task_of(record)))  # fmt: skip
    SequentialRunner().run(
        pipeline, catalog := _baselines_catalog(*args, tmp_path / "run")
    )
    assert trained == ["right"]  # only the epoch that was left of the second one
    assert not (tmp_path / "run" / "right.progress.pt").exists()
    for task in tasks_params:
        expected = reference.load(f"stl.{task}.baseline_checkpoint")
        resumed = catalog.load(f"stl.{task}.baseline_checkpoint")
        assert resumed["reused"] == (task == "left")
        assert resumed["baseline_key"] == expected["baseline_key"]
        for name, tensor in expected["model"].items():  # bit for bit
            assert torch.equal(tensor, resumed["model"][name]), (task, name)


def test_pretraining_resumes_from_its_last_epoch(
    fashion_mnist_small, model_inputs, tmp_path, monkeypatch
):
    train, val, task = build_pretraining_data(
        fashion_mnist_small, model_inputs[0], model_inputs[1], None,
        {"multifashion": {"mean": 0.1, "std": 0.3}}, SMALL_DATA_PREP, {"n_train": 300},
    )  # fmt: skip
    args = (train, val, task, MODEL, TRAINING, {}, None, {})
    reference, history = pretrain_backbone(*args, TrainProgress(tmp_path / "ref.pt"))

    def stop_after_epoch_1(epoch, record):
        os.kill(os.getpid(), signal.SIGTERM)

    progress = TrainProgress(tmp_path / "progress.pt")
    monkeypatch.setattr(pretraining_nodes, "log_epoch_metrics", stop_after_epoch_1)
    with pytest.raises(TrainingStopped, match="after epoch 1"):
        pretrain_backbone(*args, progress)
    assert progress.read()["state"]["epoch"] == 1
    trained = []
    monkeypatch.setattr(pretraining_nodes, "log_epoch_metrics",
                        lambda epoch, record: trained.append(epoch))  # fmt: skip
    resumed, resumed_history = pretrain_backbone(*args, progress)
    assert trained == [2, 3]  # epoch 1 was not trained again
    assert not progress.path.exists() and list(resumed_history["epoch"]) == [1, 2, 3]
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][name]), name


def test_stale_baseline_progress_does_not_block_a_run_that_trains_none(
    model_inputs, normalisation_stats, tasks_params, tmp_path
):
    args = (model_inputs[0], model_inputs[1], normalisation_stats, tasks_params, MODEL,
            TRAINING)  # fmt: skip
    trained, _ = train_baseline("left", *args, None, {}, None, {"enabled": False})
    stale = TrainProgress(tmp_path / "stale.pt")
    stale.write({"format": 2, "identity": {"other": "settings"}, "part": None,
                 "state": None, "mlflow_run_id": None})  # fmt: skip
    reused, history = train_baseline(
        "left", *args, trained, {}, None, {"enabled": False}, stale
    )
    assert reused["reused"] and list(history["epoch"]) == [1, 2, 3]  # its curves
    assert reused["baseline_key"] == trained["baseline_key"]


def test_a_baseline_an_interrupted_run_finished_is_resumed_with_its_curves(
    model_inputs, normalisation_stats, tasks_params, tmp_path, monkeypatch
):
    """Killed after the left baseline's node: the rerun keeps it (inputs unchanged) as
    *resumed*, and its curves go into the new run, whose curves are then whole; a
    baseline of a finished run is *reused*, its curves left where they are."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("t", artifact_location=tmp_path.as_uri())
    client = MlflowClient(tracking_uri=uri)
    args = (model_inputs[0], model_inputs[1], normalisation_stats, tasks_params, MODEL,
            TRAINING | {"epochs": 2})  # fmt: skip

    def baseline(previous, run):
        provenance = {"mlflow.run_id": run.info.run_id}
        return train_baseline(
            "left", *args, previous, provenance, None, {"enabled": False}
        )

    with mlflow.start_run(experiment_id=experiment) as killed:
        trained, history = baseline(None, killed)
    client.set_terminated(killed.info.run_id, "KILLED")
    assert trained["history"] == history.to_dict("records") and len(history) == 2
    with mlflow.start_run(experiment_id=experiment) as again:
        kept, kept_history = baseline(trained, again)
    assert kept["resumed"] and not kept["reused"]
    assert kept_history.equals(history)
    tags = client.get_run(again.info.run_id).data.tags
    assert tags["resumed_from_run_id"] == killed.info.run_id
    curve = client.get_metric_history(again.info.run_id, "stl.left.val.loss")
    assert [m.step for m in curve] == [1, 2]

    client.set_terminated(killed.info.run_id, "FINISHED")  # as if it had finished
    with mlflow.start_run(experiment_id=experiment) as later:
        reused, reused_history = baseline(trained, later)
    assert reused["reused"] and not reused["resumed"] and reused_history.equals(history)
    assert not client.get_metric_history(later.info.run_id, "stl.left.val.loss")
