"""The team set-up, end to end: ``scripts/team_server.sh`` starts an MLflow server on
loopback over a throwaway PostgreSQL cluster; ``kedro run --env team`` (the smoke
sizes) logs into it; the run is read back through the server's REST API; the model it
registered answers by alias, loaded and served (``mlflow models serve``), with the
checkpoint's predictions (tests/evaluation/test_inference.py: those are the evaluation
pipeline's); the MLflow UI shows the run in headless Chromium; and with the server down,
the run fails within seconds naming the URI."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import PROJECT_ROOT, copy_project
from mlflow.tracking import MlflowClient

from multitask_cnn.evaluation.inference import Predictor
from multitask_cnn.io import TorchDataset

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
MODEL = "mt-team"
RUN_NAME = "default · lenet · equal"
SMALL = {
    "data_prep": {"n_train": 1000, "n_test": 300},
    "pretraining": {"n_train": 1000, "training": {"epochs": 1}},
    "training": {"epochs": 1},
}
# screenshots of the UI, kept as test artifacts (README "The MLflow UI")
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", PROJECT_ROOT / "test-artifacts"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kedro_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return env | {"KEDRO_DISABLE_TELEMETRY": "1", "COLUMNS": "200"} | extra


def _api(uri: str, path: str, body: dict | None = None) -> dict:
    """One call to the MLflow REST API (GET, or POST with a JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{uri}/api/2.0/mlflow/{path}", data,
                                     {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def team_server():
    """``make team-server``'s script, on free ports, its data in a throwaway folder
    (outside pytest's private temp folders: PostgreSQL runs as the ``postgres`` user
    when the tests run as root)."""
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        message = "PostgreSQL is not installed (Debian: apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)  # .ci/run installs it: the test must run there
        pytest.skip(message)
    folder = Path(tempfile.mkdtemp(prefix="team-server-"))
    folder.chmod(0o755)
    port = _free_port()
    env = _kedro_env(TEAM_SERVER_DIR=str(folder / "server"), TEAM_SERVER_PORT=str(port),
                     TEAM_PG_PORT=str(_free_port()),
                     MLFLOW_BIN=str(BIN / "mlflow"))  # fmt: skip
    script = ["bash", str(PROJECT_ROOT / "scripts/team_server.sh")]
    try:
        subprocess.run([*script, "start"], env=env, check=True, timeout=300)
        yield {"uri": f"http://127.0.0.1:{port}", "folder": folder, "port": port}
    finally:
        subprocess.run([*script, "stop"], env=env, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def team_run(team_server, tmp_path_factory):
    """``kedro run --env team`` from a project copy whose team env has the smoke
    env's data folder and parameters, smaller (:data:`SMALL`), beside the team
    mlflow.yml; it logs and registers the model."""
    project = copy_project(tmp_path_factory.mktemp("project"), mlflow_store=False)
    shutil.copy2(project / "conf/smoke/globals.yml", project / "conf/team/globals.yml")
    parameters = yaml.safe_load((project / "conf/smoke/parameters.yml").read_text())
    for section, values in SMALL.items():  # (smaller than the smoke run: one epoch)
        parameters[section] = parameters.get(section, {}) | values
    (project / "conf/team/parameters.yml").write_text(yaml.safe_dump(parameters))
    command = [str(BIN / "kedro"), "run", "--env", "team", "--params",
               f"evaluation.log_model=true,evaluation.registered_model_name={MODEL}"]  # fmt: skip
    result = subprocess.run(command, cwd=project, capture_output=True, text=True,
                            env=_kedro_env(TEAM_SERVER_PORT=str(team_server["port"])),
                            timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    uri = team_server["uri"]
    experiment = _api(uri, "experiments/get-by-name?experiment_name=multitask-cnn")
    experiment_id = experiment["experiment"]["experiment_id"]
    (run,) = _api(uri, "runs/search", {"experiment_ids": [experiment_id]})["runs"]
    return {"project": project, "run": run, "experiment": experiment["experiment"],
            "uri": uri} | team_server  # fmt: skip


def test_the_run_is_on_the_team_server(team_run):
    uri, run = team_run["uri"], team_run["run"]
    assert run["info"]["status"] == "FINISHED"
    assert run["info"]["run_name"] == RUN_NAME
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert params["training.epochs"] == "1" and params["data_prep.n_train"] == "1000"
    assert 0 <= metrics["test.left.accuracy"] <= 1
    assert tags["kedro.env"] == "team"
    assert tags["kedro_command"] == (
        "kedro run --env=team "
        f"--params=evaluation.log_model=true,evaluation.registered_model_name={MODEL}"
    )
    # artifacts go through the server to its artifact root, none into the project
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:/")
    listed = _api(uri, f"artifacts/list?run_id={run['info']['run_id']}&path=plots/"
                       "confusion_matrices")["files"]  # fmt: skip
    assert {f["path"] for f in listed} >= {
        "plots/confusion_matrices/confusion_matrix_left.png"
    }
    stored = team_run["folder"] / "server/artifacts"
    assert list(stored.rglob("confusion_matrix_left.png"))
    assert not (team_run["project"] / "mlruns").exists()
    assert not (team_run["project"] / "mlflow.db").exists()
    # the experiment opens in the UI as model training, with a description
    experiment_tags = {t["key"]: t["value"] for t in team_run["experiment"]["tags"]}
    assert experiment_tags["mlflow.experimentKind"] == "custom_model_development"
    assert "one convolutional network" in experiment_tags["mlflow.note.content"]


def _serve(uri: str, model: str, images: list) -> list[dict]:
    """``mlflow models serve`` on loopback: its answer to one /invocations request."""
    port = _free_port()
    env = os.environ | {
        "MLFLOW_TRACKING_URI": uri,
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }  # it execs the venv's uvicorn
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local",
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


def test_the_registered_model_answers_by_alias_loaded_and_served(team_run, monkeypatch):
    uri, project = team_run["uri"], team_run["project"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    version = client.get_model_version_by_alias(MODEL, "candidate")
    assert version.run_id == team_run["run"]["info"]["run_id"]

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@candidate")
    test = TorchDataset(str(project / "data/smoke/05_model_input/model_input_test.pt"))
    images = test.load()["multifashion"]["images"][:64].numpy()  # uint8 (64, 1, 36, 36)
    answers = model.predict(images)
    checkpoint = TorchDataset(
        str(project / "data/smoke/06_models/multitask_checkpoint.pt")
    ).load()
    predictor = Predictor(checkpoint)
    expected = predictor.predict(images)
    assert list(answers.columns) == ["left", "right"]
    assert model.predict(images, params={"source": "multifashion"}).equals(answers)
    for task in ("left", "right"):
        names = predictor.class_names(task)
        assert answers[task].tolist() == [names[i] for i in expected[task]]

    # served on loopback, it answers the same over HTTP
    served = _serve(uri, f"models:/{MODEL}@candidate", images[:8].tolist())
    assert served == answers.iloc[:8].to_dict("records")

    # `make promote`: champion is moved by hand
    sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
    try:
        from promote_model import promote
    finally:
        sys.path.pop(0)
    promote(MODEL, version.version, "champion", uri)
    assert (
        client.get_model_version_by_alias(MODEL, "champion").version == version.version
    )


def test_the_ui_shows_the_run_its_metrics_and_a_plot_in_chromium(team_run):
    """What a user sees, in the system's Chromium (Playwright downloads nothing):
    the experiment's runs with this one, its per-task metrics, a confusion matrix."""
    from playwright.sync_api import sync_playwright

    browser_path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(browser_path).exists():
        message = "Chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    uri, run = team_run["uri"], team_run["run"]
    experiment = f"{uri}/#/experiments/{run['info']['experiment_id']}"
    # MLflow 3's UI opens in its GenAI view unless told otherwise (README)
    view = "?workflowType=machine_learning"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path,
                                             args=["--no-sandbox"])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(experiment + view)
            page.get_by_text("one convolutional network").first.wait_for()
            page.get_by_role("link", name=RUN_NAME).click()  # the runs table
            page.get_by_text("test.left.accuracy").first.wait_for(state="attached")
            page.get_by_text("test.right.f1_macro").first.wait_for(state="attached")
            page.goto(f"{experiment}/runs/{run['info']['run_id']}{view}")
            page.get_by_text("kedro_command").first.wait_for()
            if page.get_by_role("button", name="Close").count():
                page.get_by_role("button", name="Close").first.click()  # the assistant
            page.get_by_placeholder("Search metrics").fill("test.")  # per-task metrics
            page.get_by_role("link", name="test.left.accuracy", exact=True).wait_for()
            page.screenshot(path=ARTIFACTS / "mlflow_ui_run.png")

            page.get_by_role("tab", name="Artifacts").click()
            for folder in ("plots", "confusion_matrices"):
                page.get_by_text(folder, exact=True).first.click()
            page.get_by_text("confusion_matrix_left.png", exact=True).first.click()
            page.wait_for_function(
                "Array.from(document.images).some(i => i.src.startsWith('blob:') && "
                "i.naturalWidth > 300)"
            )  # the PNG, fetched through the server and drawn (800 px wide)
            page.screenshot(path=ARTIFACTS / "mlflow_ui_artifact.png")
        finally:
            browser.close()
    for name in ("mlflow_ui_run.png", "mlflow_ui_artifact.png"):
        assert (ARTIFACTS / name).stat().st_size > 20_000


def test_with_the_server_down_the_run_stops_in_seconds_naming_it(tmp_path):
    project = copy_project(tmp_path, mlflow_store=False)
    port = _free_port()  # nothing listens there
    started = time.monotonic()
    result = subprocess.run([str(BIN / "kedro"), "run", "--env", "team"], cwd=project,
                            capture_output=True, text=True, timeout=120,
                            env=_kedro_env(TEAM_SERVER_PORT=str(port)))  # fmt: skip
    seconds = time.monotonic() - started
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert (
        f"the MLflow tracking server http://127.0.0.1:{port} does not answer" in output
    )
    assert "Traceback" not in output
    assert seconds < 60, (
        seconds
    )  # Kedro's start-up included; MLflow alone retries minutes
    assert not any((project / "data").iterdir())  # nothing read, nothing written
