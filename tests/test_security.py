"""Safe loading, loopback servers, and credentials that never reach MLflow."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT_ROOT
from mlflow.tracking import MlflowClient

SOURCES = sorted(p for folder in ("src", "scripts", "bench", "tests", "notebooks")
                 for p in (PROJECT_ROOT / folder).rglob("*.py"))  # fmt: skip


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            yield ast.unparse(node.func), node


def _keyword(call: ast.Call, name: str):
    found = [k.value for k in call.keywords if k.arg == name]
    return found[0] if found else None


def test_every_load_is_safe_and_nothing_unpickles():
    loads = 0
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for name, call in _calls(tree):
            where = f"{path.relative_to(PROJECT_ROOT)}:{call.lineno}"
            if name == "torch.load":
                loads += 1
                value = _keyword(call, "weights_only")
                assert isinstance(value, ast.Constant) and value.value is True, where
            if name in ("np.load", "numpy.load"):
                value = _keyword(call, "allow_pickle")
                assert value is None or (
                    isinstance(value, ast.Constant) and not value.value
                ), where
            assert name not in (
                "pickle.load",
                "pickle.loads",
                "dill.load",
                "joblib.load",
            ), where
        if path.is_relative_to(PROJECT_ROOT / "tests"):  # (a test pickles a trap file)
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module]
                )
                assert not {"pickle", "dill", "joblib"} & set(modules), path
    assert (
        loads >= 3
    )  # the scan sees the project's loads (checkpoints, progress, transfer)


def test_servers_bind_to_loopback():
    mlflow_ui = yaml.safe_load((PROJECT_ROOT / "conf/base/mlflow.yml").read_text())[
        "ui"
    ]
    assert mlflow_ui["host"] == "127.0.0.1"
    airflow = (PROJECT_ROOT / "scripts/airflow_local.sh").read_text()
    assert "api-server --host 127.0.0.1" in airflow and "--skip-serve-logs" in airflow


@pytest.mark.slow
def test_a_planted_credential_never_reaches_mlflow(project_copy):
    secret = "planted-s3cret-9f2c"
    local = project_copy / "conf" / "local"
    (local / "credentials.yml").write_text(
        f"mlflow_creds:\n  MLFLOW_TRACKING_USERNAME: someone\n  MLFLOW_TRACKING_PASSWORD: {secret}\n"
    )
    (local / "mlflow.yml").write_text("server:\n  credentials: mlflow_creds\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "kedro"), "run", "--pipelines", "data_prep",
         "--params", "data_prep.n_train=600,data_prep.n_test=200"],
        cwd=project_copy, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert secret not in done.stdout + done.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{project_copy / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("multitask-cnn")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params  # the run logged its parameters ...
    logged = {**run.data.params, **run.data.tags}
    assert not [
        k for k, v in logged.items() if secret in str(v) or secret in k
    ]  # ... not this
    assert (local / "credentials.yml").read_text().count(secret) == 1
    ignored = subprocess.run(["git", "check-ignore", "-q", "conf/local/credentials.yml"],
                             cwd=PROJECT_ROOT)  # fmt: skip
    assert ignored.returncode == 0  # conf/local is never committed
