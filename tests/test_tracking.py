import math

import mlflow
from mlflow.tracking import MlflowClient

from multitask_cnn.tracking import log_epoch_metrics, note_resumed_run


def test_epoch_metrics_skip_non_finite_values(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # restored after the test
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("t", artifact_location=tmp_path.as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        log_epoch_metrics(1, {"epoch": 1, "train.loss": 2.0, "val.loss": 1.5})
        log_epoch_metrics(2, {"epoch": 2, "train.loss": math.nan, "val.loss": math.inf})
    client = MlflowClient(tracking_uri=uri)
    for key in ("train.loss", "val.loss"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1]
    assert "epoch" not in client.get_run(run.info.run_id).data.metrics
    log_epoch_metrics(
        3, {"train.loss": 1.0}
    )  # no active run: nothing happens, no error


def test_a_resume_names_the_killed_run_unless_it_is_this_one(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("t", artifact_location=tmp_path.as_uri())
    # an earlier test in this process may have left another experiment active
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.set_experiment(experiment_id=experiment)
    client = MlflowClient(tracking_uri=uri)
    killed = client.create_run(experiment).info.run_id  # left RUNNING by a SIGKILL
    history = [{"epoch": 1, "val.loss": 2.0}, {"epoch": 2, "val.loss": 1.5}]
    with mlflow.start_run(experiment_id=experiment) as run:
        note_resumed_run(killed, history)
    assert client.get_run(run.info.run_id).data.tags["resumed_from_run_id"] == killed
    assert client.get_run(killed).info.status == "KILLED"
    curve = client.get_metric_history(run.info.run_id, "val.loss")
    assert [m.step for m in curve] == [1, 2]
    # an Airflow retry goes on in the same run: nothing to mark, nothing to log again
    with mlflow.start_run(run_id=run.info.run_id):
        note_resumed_run(run.info.run_id, history)
        assert client.get_run(run.info.run_id).info.status == "RUNNING"
    assert len(client.get_metric_history(run.info.run_id, "val.loss")) == 2
