import pytest

from multitask_cnn import provenance
from multitask_cnn.provenance import ProjectNotFoundError
from multitask_cnn.settings import (
    mlflow_artifact_location,
    mlflow_tracking_uri,
    project_root,
)


def test_tracking_store_is_anchored_to_the_project_root(project_copy, monkeypatch):
    (project_copy / "notebooks").mkdir()
    monkeypatch.chdir(
        project_copy / "notebooks"
    )  # a notebook, or cron elsewhere inside
    assert project_root() == project_copy
    assert mlflow_tracking_uri() == f"sqlite:///{project_copy}/mlflow.db"
    assert mlflow_artifact_location() == f"file://{project_copy}/mlruns"


def test_environment_variable_points_at_a_team_server(project_copy, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert mlflow_tracking_uri() == "http://mlflow.example:5000"
    assert mlflow_artifact_location() is None  # the server decides


def test_project_root_of_a_non_editable_install(
    project_copy, tmp_path_factory, monkeypatch
):
    # installed into site-packages, the package lies outside any project
    site = tmp_path_factory.mktemp("site-packages") / "multitask_cnn"
    site.mkdir()
    monkeypatch.setattr(provenance, "_PACKAGE_DIR", site)
    assert project_root() == project_copy  # found from the current directory
    monkeypatch.chdir(site)
    with pytest.raises(
        ProjectNotFoundError, match="run from inside the project folder"
    ):
        mlflow_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////srv/mlflow.db")
    assert mlflow_tracking_uri() == "sqlite:////srv/mlflow.db"  # no project needed


def test_importing_the_project_leaves_matplotlib_alone_and_turns_telemetry_off():
    """Importing the project keeps the matplotlib backend a notebook chose; and MLflow
    3, which sends usage events from a background thread unless told not to and reads
    DO_NOT_TRACK=1 as "track" (it wants "true"), is told no by the project's settings.
    (One fresh interpreter for both: the imports take seconds.)"""
    import os
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); "
        "from mlflow.telemetry.utils import is_telemetry_disabled; "
        "before = is_telemetry_disabled(); "
        "import multitask_cnn.pipeline_registry, multitask_cnn.settings; "
        "from multitask_cnn.pipelines.evaluation import nodes; "
        "print(matplotlib.get_backend(), before, is_telemetry_disabled())"
    )
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_DISABLE_TELEMETRY", "CI", "PYTEST_CURRENT_TEST")}  # fmt: skip
    env["DO_NOT_TRACK"] = "1"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env=env)  # fmt: skip
    assert result.stdout.split() == ["svg", "False", "True"]
