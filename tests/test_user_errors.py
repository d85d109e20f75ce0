"""A mistake in the input ends `kedro run` with one message, not a traceback; a bug
keeps its traceback; MULTITASK_CNN_DEBUG=1 shows it for both."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from kedro.io import DatasetError

from multitask_cnn.config import ConfigError
from multitask_cnn.data.fashion_mnist import FashionMNISTNotFoundError
from multitask_cnn.errors import DEBUG_ENV, UserError, install_excepthook, user_error_in
from multitask_cnn.models.checkpoint import CheckpointMismatchError
from multitask_cnn.pipelines.resume import ProgressMismatchError
from multitask_cnn.registry import UnknownNameError
from multitask_cnn.tracking import TrackingServerError, check_tracking_server


def test_the_project_s_input_errors_are_user_errors_and_keep_their_types():
    for kind, base in ((ConfigError, ValueError), (CheckpointMismatchError, ValueError),
                       (ProgressMismatchError, ValueError), (UnknownNameError, KeyError),
                       (FashionMNISTNotFoundError, FileNotFoundError)):  # fmt: skip
        assert issubclass(kind, UserError) and issubclass(kind, base)


def test_a_user_error_is_found_behind_kedro_s_wrapping():
    try:
        try:
            raise FashionMNISTNotFoundError("no Fashion-MNIST in data/01_raw")
        except FileNotFoundError as error:
            raise DatasetError("Failed while loading data from dataset") from error
    except DatasetError as wrapped:
        found = user_error_in(wrapped)
    assert isinstance(found, FashionMNISTNotFoundError)
    assert user_error_in(RuntimeError("a bug")) is None


def test_the_hook_prints_one_message_and_leaves_bugs_to_the_previous_hook(
    monkeypatch, capsys
):
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *args: seen.append(args[1]))
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    install_excepthook()
    install_excepthook()  # once is enough
    error = ConfigError("parameter 'training.lr': must be > 0")
    sys.excepthook(ConfigError, error, None)
    assert capsys.readouterr().err.startswith(
        "Error: parameter 'training.lr': must be > 0\n"
    )
    assert seen == []
    bug = ZeroDivisionError("division by zero")
    sys.excepthook(ZeroDivisionError, bug, None)
    assert seen == [bug]  # a bug: the traceback, as before
    monkeypatch.setenv(DEBUG_ENV, "1")
    sys.excepthook(ConfigError, error, None)
    assert seen == [bug, error] and capsys.readouterr().err == ""


@pytest.mark.slow
def test_kedro_run_with_a_bad_parameter_says_one_thing(project_copy):
    kedro = [str(Path(sys.executable).parent / "kedro"), "run", "--env", "smoke",
             "--params", "training.epochs=abc"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    done = subprocess.run(kedro, cwd=project_copy, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    # (after MLflow's note that it created the store)
    assert "Error: Invalid parameters:\n  - parameter 'training.epochs'" in done.stderr
    # (and with it, the traceback: the hook's test above)
    assert f"{DEBUG_ENV}=1 shows the traceback" in done.stderr
    assert not (project_copy / "data" / "smoke").exists()  # stopped before any work


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_tracking_server_that_does_not_answer_is_named_at_once():
    uri = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(TrackingServerError, match=f"{uri} does not answer"):
        check_tracking_server(uri, timeout=5)
    with pytest.raises(
        TrackingServerError
    ) as refused:  # credentials: not sent, not shown
        check_tracking_server(uri.replace("//", "//someone:s3cret@"), timeout=5)
    assert "s3cret" not in str(refused.value) and f"{uri} does not answer" in str(
        refused.value
    )

    class Refusing(
        http.server.BaseHTTPRequestHandler
    ):  # a proxy asking for credentials
        def do_GET(self):
            self.send_error(401)

        def log_message(self, *args):
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Refusing) as server:
        thread = threading.Thread(target=server.handle_request)
        thread.start()
        check_tracking_server(f"http://127.0.0.1:{server.server_port}")  # it is there
        thread.join(timeout=10)


@pytest.mark.slow
def test_kedro_run_against_an_absent_tracking_server_stops_at_once(project_copy):
    uri = f"http://127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    done = subprocess.run(  # MLflow alone would retry for minutes: the timeout fails it
        [str(Path(sys.executable).parent / "kedro"), "run", "--env", "smoke"],
        cwd=project_copy, env=env | {"MLFLOW_TRACKING_URI": uri}, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"Error: the MLflow tracking server {uri} does not answer" in done.stderr
    assert not (project_copy / "data" / "smoke").exists()
