"""The cron recipe (scripts/scheduled_run.sh): a real scheduled `kedro run` named after
its schedule, one at a time per schedule, its failure as the exit status."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT
from mlflow.tracking import MlflowClient
from test_production_runs import PROGRESS

pytestmark = pytest.mark.slow

SCRIPT = PROJECT_ROOT / "scripts" / "scheduled_run.sh"


def _scheduled(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MULTITASK_CNN_PROJECT": str(project), "VENV": str(Path(sys.executable).parent.parent),
            "HOME": str(project)}  # fmt: skip
    return subprocess.run(["bash", str(SCRIPT), *args], cwd="/", env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_a_scheduled_run_is_named_logged_and_alone(project_copy):
    done = _scheduled(
        project_copy, "nightly", "--env", "smoke", "--pipelines", "data_prep"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (log,) = (project_copy / "logs/scheduled/nightly").glob("*.log")
    assert "nightly: exit status 0" in log.read_text()
    client = MlflowClient(tracking_uri=f"sqlite:///{project_copy / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("multitask-cnn-smoke")
    (run,) = client.search_runs([experiment.experiment_id])
    assert (
        run.info.run_name == f"nightly {log.stem}"
        and run.data.tags["schedule"] == "nightly"
    )
    assert run.info.status == "FINISHED"

    # while the lock is held (a run of this schedule under way), the next one is skipped
    lock = project_copy / "logs/scheduled/nightly/.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        skipped = _scheduled(
            project_copy, "nightly", "--env", "smoke", "--pipelines", "data_prep"
        )
    assert (
        skipped.returncode == 75 and "still holds the lock; skipped" in skipped.stderr
    )
    assert len(client.search_runs([experiment.experiment_id])) == 1  # no second run


def test_a_failing_scheduled_run_exits_non_zero_and_shows_why(project_copy):
    failed = _scheduled(
        project_copy, "hourly", "--env", "smoke", "--params", "training.epochs=0"
    )
    assert failed.returncode != 0
    assert "hourly failed (exit" in failed.stderr and "training.epochs" in failed.stderr
    bad = _scheduled(project_copy, "no spaces")
    assert bad.returncode == 64 and "usage:" in bad.stderr


def test_stopping_the_script_stops_the_run_gracefully(prepared_project):
    project_copy = prepared_project
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {
        "MULTITASK_CNN_PROJECT": str(project_copy),
        "VENV": str(Path(sys.executable).parent.parent),
    }
    script = subprocess.Popen(
        ["bash", str(SCRIPT), "nightly", "--env", "smoke", "--pipelines", "multitask_training",
         "--params", "training.epochs=6,training.batch_size=8"],
        cwd="/", env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (project_copy / PROGRESS).is_file() and script.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    script.send_signal(signal.SIGTERM)  # as `kill`, `timeout` or systemd would
    _, stderr = script.communicate(timeout=120)
    assert script.returncode != 0
    assert "nightly failed (exit" in stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{project_copy / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("multitask-cnn-smoke")
    (run,) = client.search_runs([experiment.experiment_id], "tags.schedule = 'nightly'")
    assert run.info.status == "KILLED"  # kedro got the signal and stopped after a step
    assert (project_copy / PROGRESS).is_file()  # its progress kept for the next night
