"""`kedro run` logs the multi-task model as an MLflow model, registered with an alias:
loaded by that alias it answers, on raw test images, the checkpoint's predictions
(tests/evaluation/test_inference.py: those are the evaluation pipeline's)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow.tracking import MlflowClient

from multitask_cnn.evaluation.inference import Predictor
from multitask_cnn.io import TorchDataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(uri: str, model: str, images: list) -> list[dict]:
    """``mlflow models serve`` on loopback: its answer to one /invocations request."""
    port = _free_port()
    bin_dir = Path(sys.executable).parent  # it execs uvicorn from the venv
    env = os.environ | {
        "MLFLOW_TRACKING_URI": uri,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    server = subprocess.Popen(
        [str(bin_dir / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, "mlflow models serve ended"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "the server never answered /ping"
                time.sleep(1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", json.dumps({"inputs": images}).encode(),
            {"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_a_run_registers_the_model_and_its_alias_answers_per_task(project_copy):
    bootstrap_project(project_copy)
    params = {"evaluation": {"log_model": True, "registered_model_name": "mt-smoke"}}
    with KedroSession.create(project_path=project_copy, env="smoke",
                             runtime_params=params) as session:  # fmt: skip
        session.run()
    uri = f"sqlite:///{project_copy / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    version = client.get_model_version_by_alias("mt-smoke", "candidate")
    run = client.get_run(version.run_id)
    assert run.data.params["evaluation.registered_model_name"] == "mt-smoke"

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/mt-smoke@candidate")
    test = TorchDataset(
        str(project_copy / "data/smoke/05_model_input/model_input_test.pt")
    )
    images = test.load()["multifashion"]["images"][:64].numpy()  # uint8 (64, 1, 36, 36)
    answers = model.predict(images)
    checkpoint = TorchDataset(
        str(project_copy / "data/smoke/06_models/multitask_checkpoint.pt")
    ).load()
    predictor = Predictor(checkpoint)
    expected = predictor.predict(images)
    assert list(answers.columns) == ["left", "right"]
    named = model.predict(images, params={"source": "multifashion"})
    assert named.equals(answers)
    for task in ("left", "right"):
        names = predictor.class_names(task)
        assert answers[task].tolist() == [names[i] for i in expected[task]]

    # served on loopback, it answers the same over HTTP
    served = _serve(uri, "models:/mt-smoke@candidate", images[:8].tolist())
    assert served == answers.iloc[:8].to_dict("records")

    # `make promote`: champion is moved by hand
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from promote_model import promote
    finally:
        sys.path.pop(0)
    promote("mt-smoke", version.version, "champion", uri)
    assert str(client.get_model_version_by_alias("mt-smoke", "champion").version) == "1"
