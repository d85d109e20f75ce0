import math

import mlflow
from mlflow.tracking import MlflowClient

from multitask_cnn.tracking import log_epoch_metrics


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
