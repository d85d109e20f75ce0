"""Runs of one env share its data folder: started at once, they take turns (a lock on
the folder), all finish, all are recorded, and each records the model it trained."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from multitask_cnn.hooks import RunLockHook
from multitask_cnn.io.run_lock import RunLock

HOLD = """
import logging, sys
from multitask_cnn.io.run_lock import RunLock
logging.basicConfig()
lock = RunLock(sys.argv[1])
lock.acquire()
print("acquired", flush=True)
"""


def test_a_second_run_waits_for_the_lock_and_names_the_holder(tmp_path, caplog):
    lock = RunLock(tmp_path / "data" / ".run.lock")
    lock.acquire()
    assert f"pid {os.getpid()}" in (tmp_path / "data" / ".run.lock").read_text()
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(lock.path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    waiting = other.stderr.readline()  # it says so, and whom it waits for
    assert "waiting for it to finish" in waiting and f"pid {os.getpid()}" in waiting
    time.sleep(1)
    assert other.poll() is None  # still waiting
    lock.release()
    out, _ = other.communicate(timeout=60)
    assert other.returncode == 0 and out.strip() == "acquired"
    # a process that ends drops its lock, however it ends: no stale lock
    lock.acquire()
    lock.release()


def test_a_checkpoint_written_by_another_run_is_refused(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("t", artifact_location=tmp_path.as_uri())
    hook = RunLockHook()
    hook.before_pipeline_run()
    hook.after_node_run(
        SimpleNamespace(outputs=["multitask_checkpoint", "training_history"])
    )
    with mlflow.start_run(experiment_id=experiment) as run:
        mine = {"provenance": {"mlflow.run_id": run.info.run_id}}
        hook.after_dataset_loaded("multitask_checkpoint", mine)  # its own: fine
        theirs = {"provenance": {"mlflow.run_id": "0123abc"}}
        with pytest.raises(
            RuntimeError, match="written by MLflow run 0123abc, not by this"
        ):
            hook.after_dataset_loaded("multitask_checkpoint", theirs)
        # a baseline reused from an earlier run is not this run's, and need not be
        hook.after_node_run(SimpleNamespace(outputs=["stl.left.baseline_checkpoint"]))
        hook.after_dataset_loaded(
            "stl.left.baseline_checkpoint", theirs | {"reused": True}
        )
        with pytest.raises(
            RuntimeError, match=r"stl\.left\.baseline_checkpoint \(left\)"
        ):
            hook.after_dataset_loaded(
                "stl.left.baseline_checkpoint", theirs | {"reused": False}
            )
        # the gathered baselines are checked in their own files, not again
        hook.after_dataset_loaded("baseline_checkpoints", {"left": theirs})


# the whole pipeline, smaller than the smoke env: the runs wait for each other
SMALL = ("training.epochs=1,pretraining.training.epochs=1,data_prep.n_train=1000,"
         "data_prep.n_test=300,pretraining.n_train=1000,evaluation.timing_repeats=1")  # fmt: skip


@pytest.mark.slow
def test_three_runs_at_once_all_finish_each_with_its_own_model(project_copy):
    # a new store: the three set it up at once too (TrackingStoreHook's lock)
    (project_copy / "mlflow.db").unlink()
    kedro = str(Path(sys.executable).parent / "kedro")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["COLUMNS"] = "400"  # Kedro's log lines unwrapped
    runs = [
        subprocess.Popen(
            [
                kedro,
                "run",
                "--env",
                "smoke",
                "--params",
                f"training.seed={seed},{SMALL}",
            ],
            cwd=project_copy,
            env=env,
            stdout=(project_copy / f"seed{seed}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for seed in (1, 2, 3)
    ]
    for (
        process
    ) in runs:  # (logs in files: a full pipe would stall a run that holds the lock)
        process.wait(timeout=900)
    logs = [(project_copy / f"seed{seed}.log").read_text() for seed in (1, 2, 3)]
    assert [process.returncode for process in runs] == [0] * 3, logs[0][-3000:]
    assert (
        sum("waiting for it to finish" in log for log in logs) >= 2
    )  # they took turns

    client = MlflowClient(tracking_uri=f"sqlite:///{project_copy / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("multitask-cnn-smoke")
    recorded = client.search_runs([experiment.experiment_id])
    assert len(recorded) == 3 and {r.info.status for r in recorded} == {"FINISHED"}
    assert sorted(r.data.params["training.seed"] for r in recorded) == ["1", "2", "3"]
    for run in recorded:  # each evaluated the checkpoint it trained, and logged results
        assert run.data.tags["checkpoint.run_id"] == run.info.run_id
        assert "test.left.accuracy" in run.data.metrics
