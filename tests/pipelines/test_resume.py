"""Resume after interruption: the training node saves its progress after every epoch;
stopped by SIGTERM after a step, then run again, it ends exactly as an uninterrupted
run; progress made under other settings is refused, naming what differs."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from multitask_cnn.io import TrainProgress
from multitask_cnn.pipelines.multitask_training import nodes
from multitask_cnn.pipelines.multitask_training.nodes import train_multitask_model
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
