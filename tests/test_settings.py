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


def test_importing_the_project_leaves_the_matplotlib_backend_alone():
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); "
        "import multitask_cnn.pipeline_registry, multitask_cnn.settings; "
        "from multitask_cnn.pipelines.evaluation import nodes; "
        "print(matplotlib.get_backend())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "svg"
