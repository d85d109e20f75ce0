"""A real `kedro run`, killed (SIGKILL) mid-training and run again with the same
command, ends as an uninterrupted run (bit for bit, deterministic), in a new MLflow run
that names the one it resumes; stopped with SIGTERM, it ends KILLED in MLflow and exits
non-zero."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

PARAMS = "training.epochs=4,training.batch_size=8"  # about a second per epoch here
COMMAND = [sys.executable, "-m", "kedro", "run", "--env", "smoke",
           "--pipelines", "multitask_training", "--params", PARAMS]  # fmt: skip
PROGRESS = Path("data/smoke/06_models/training_progress.pt")
CHECKPOINT = Path("data/smoke/06_models/multitask_checkpoint.pt")


def _start_and_signal(
    project: Path, signum: int, command: list[str] = COMMAND
) -> subprocess.Popen:
    """Start ``command``; once an epoch's progress is saved, send ``signum``."""
    process = subprocess.Popen(command, cwd=project, stdout=subprocess.DEVNULL,
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


def _saved(project: Path) -> dict:
    return {
        "checkpoint": torch.load(project / CHECKPOINT, weights_only=True),
        "state": torch.load(project / "data/smoke/06_models/train_state.pt",
                            weights_only=True),
    }  # fmt: skip


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(prepared_project):
    project = prepared_project
    # deterministic: the uninterrupted run and the resumed one agree bit for bit
    command = [*COMMAND[:-1], f"{PARAMS},training.deterministic=true"]
    done = subprocess.run(command, cwd=project, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reference = _saved(project)

    killed = _start_and_signal(project, signal.SIGKILL, command)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    saved = torch.load(project / PROGRESS, weights_only=True)
    assert 1 <= saved["state"]["epoch"] < 4  # at most the epoch under way was lost
    killed_run_id = saved["mlflow_run_id"]

    again = subprocess.run(command, cwd=project, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (project / PROGRESS).exists()
    resumed = _saved(project)
    assert resumed["checkpoint"]["epoch"] == reference["checkpoint"]["epoch"]
    for name, tensor in reference["checkpoint"]["model"].items():  # the best epoch's
        assert torch.equal(tensor, resumed["checkpoint"]["model"][name]), name
    for name, tensor in reference["state"]["model"].items():  # the last epoch's
        assert torch.equal(tensor, resumed["state"]["model"][name]), name
    moments = [(a["exp_avg"], b["exp_avg"]) for a, b in zip(
        reference["state"]["optimizer"]["state"].values(),
        resumed["state"]["optimizer"]["state"].values(), strict=True)]  # fmt: skip
    assert moments and all(torch.equal(a, b) for a, b in moments)
    metrics = [[{k: v for k, v in r.items() if k != "epoch_seconds"}
                for r in s["state"]["history"]] for s in (reference, resumed)]  # fmt: skip
    assert len(metrics[0]) == 4 and metrics[0] == metrics[1]  # every epoch's losses

    client, runs = _runs(project)
    first, last = runs[0], runs[-1]
    assert last.data.tags["resumed_from_run_id"] == killed_run_id
    assert client.get_run(killed_run_id).info.status == "KILLED"  # not left RUNNING
    curve = client.get_metric_history(last.info.run_id, "val.loss")
    assert sorted(m.step for m in curve) == [1, 2, 3, 4]  # the whole curve in one run
    for run in (first, last):
        assert run.data.tags["torch.deterministic"] == "true"
        assert run.data.params["training.deterministic"] == "True"


def test_sigterm_stops_after_a_step_and_the_run_ends_killed(prepared_project):
    project = prepared_project
    stopped = _start_and_signal(project, signal.SIGTERM)
    stopped.communicate(timeout=120)
    assert stopped.returncode != 0
    saved = torch.load(project / PROGRESS, weights_only=True)
    _, runs = _runs(project)
    training = [r for r in runs if r.info.run_id == saved["mlflow_run_id"]]
    assert training and training[0].info.status == "KILLED"
    assert os.path.getsize(project / PROGRESS) > 0
