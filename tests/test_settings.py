from multitask_cnn.settings import (
    mlflow_artifact_location,
    mlflow_tracking_uri,
    project_root,
)


def test_tracking_store_is_anchored_to_the_project_root(project_copy, monkeypatch):
    (project_copy / "notebooks").mkdir()
    monkeypatch.chdir(project_copy / "notebooks")  # a notebook, or cron elsewhere inside
    assert project_root() == project_copy
    assert mlflow_tracking_uri() == f"sqlite:///{project_copy}/mlflow.db"
    assert mlflow_artifact_location() == f"file://{project_copy}/mlruns"


def test_environment_variable_points_at_a_team_server(project_copy, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert mlflow_tracking_uri() == "http://mlflow.example:5000"
    assert mlflow_artifact_location() is None  # the server decides
