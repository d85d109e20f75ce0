"""A real `kedro run`, killed (SIGKILL) mid-training and run again with the same
command, ends as an uninterrupted run, in a new MLflow run that names the one it
resumes; stopped with SIGTERM, it ends KILLED in MLflow and exits non-zero."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

PARAMS = "training.epochs=4,training.batch_size=8"  # about a second per epoch here
COMMAND = [sys.executable, "-m", "kedro", "run", "--env", "smoke",
           "--pipelines", "multitask_training", "--params", PARAMS]  # fmt: skip
PROGRESS = Path("data/smoke/06_models/training_progress.pt")
CHECKPOINT = Path("data/smoke/06_models/multitask_checkpoint.pt")


def _prepared(project: Path) -> None:
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="smoke") as session:
        session.run(pipeline_names=["data_prep", "pretraining", "weight_transfer"])


def _start_and_signal(project: Path, signum: int) -> subprocess.Popen:
    """Start the command; once an epoch's progress is saved, send ``signum``."""
    process = subprocess.Popen(COMMAND, cwd=project, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (project / PROGRESS).is_file():
            process.send_signal(signum)
            return process
        time.sleep(0.02)
    process.kill()
    pytest.fail(
        f"no progress saved before the run ended: {process.communicate()[1][-2000:]}"
    )


def _runs(project: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("multitask-cnn-smoke")
    runs = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time ASC"]
    )
    return client, runs


def test_a_killed_run_resumes_to_the_same_weights(project_copy):
    _prepared(project_copy)
    done = subprocess.run(
        COMMAND, cwd=project_copy, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reference = torch.load(project_copy / CHECKPOINT, weights_only=True)
    shutil.copy2(project_copy / CHECKPOINT, project_copy / "reference.pt")

    killed = _start_and_signal(project_copy, signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    saved = torch.load(project_copy / PROGRESS, weights_only=True)
    assert 1 <= saved["state"]["epoch"] < 4  # at most the epoch under way was lost
    killed_run_id = saved["mlflow_run_id"]

    again = subprocess.run(
        COMMAND, cwd=project_copy, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (project_copy / PROGRESS).exists()
    resumed = torch.load(project_copy / CHECKPOINT, weights_only=True)
    assert resumed["epoch"] == reference["epoch"]
    for name, tensor in reference["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name

    client, runs = _runs(project_copy)
    last = runs[-1]
    assert last.data.tags["resumed_from_run_id"] == killed_run_id
    assert client.get_run(killed_run_id).info.status == "KILLED"  # not left RUNNING
    curve = client.get_metric_history(last.info.run_id, "val.loss")
    assert sorted(m.step for m in curve) == [1, 2, 3, 4]  # the whole curve in one run


def test_sigterm_stops_after_a_step_and_the_run_ends_killed(project_copy):
    _prepared(project_copy)
    stopped = _start_and_signal(project_copy, signal.SIGTERM)
    stopped.communicate(timeout=120)
    assert stopped.returncode != 0
    saved = torch.load(project_copy / PROGRESS, weights_only=True)
    _, runs = _runs(project_copy)
    training = [r for r in runs if r.info.run_id == saved["mlflow_run_id"]]
    assert training and training[0].info.status == "KILLED"
    assert os.path.getsize(project_copy / PROGRESS) > 0


def test_deterministic_runs_give_the_same_weights_bit_for_bit(project_copy):
    _prepared(project_copy)
    command = [*COMMAND[:-1], "training.deterministic=true,training.epochs=2"]
    saved = []
    for attempt in range(2):
        done = subprocess.run(command, cwd=project_copy, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        saved.append({
            "checkpoint": torch.load(project_copy / CHECKPOINT, weights_only=True),
            "state": torch.load(project_copy / "data/smoke/06_models/train_state.pt",
                                weights_only=True),
        })  # fmt: skip
    first, second = saved
    for name, tensor in first["checkpoint"]["model"].items():
        assert torch.equal(tensor, second["checkpoint"]["model"][name]), name
    for name, tensor in first["state"]["model"].items():  # the last epoch's weights
        assert torch.equal(tensor, second["state"]["model"][name]), name
    moments = [(a["exp_avg"], b["exp_avg"]) for a, b in zip(
        first["state"]["optimizer"]["state"].values(),
        second["state"]["optimizer"]["state"].values(), strict=True)]  # fmt: skip
    assert moments and all(torch.equal(a, b) for a, b in moments)
    metrics = [{k: v for k, v in r.items() if k != "epoch_seconds"}
               for s in saved for r in s["state"]["history"]]  # fmt: skip
    assert metrics[:2] == metrics[2:]  # every epoch's losses and accuracies
    _, runs = _runs(project_copy)
    assert [r.data.tags.get("torch.deterministic") for r in runs[-2:]] == [
        "true",
        "true",
    ]
    assert all(r.data.params["training.deterministic"] == "True" for r in runs[-2:])
