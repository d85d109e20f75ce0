"""Our datasets wrapped in kedro-mlflow's MlflowArtifactDataset log what they save."""

import mlflow
import pandas as pd
import pytest
from kedro_mlflow.io.artifacts import MlflowArtifactDataset
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from multitask_cnn.io import CSVDataset, FiguresDataset


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """A throw-away SQLite store whose experiment keeps artifacts in tmp_path."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    artifacts = tmp_path / "artifacts"
    experiment_id = mlflow.create_experiment("io", artifact_location=artifacts.as_uri())
    yield experiment_id
    if mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # also unsets MLFLOW_TRACKING_URI


def _figure(width: float) -> Figure:
    figure = Figure(figsize=(width, 1))
    figure.add_subplot().plot([0, 1])
    return figure


def test_figures_folder_and_csv_are_logged_as_artifacts(tmp_path, tracking):
    out = tmp_path / "data" / "08_reporting"
    figures = MlflowArtifactDataset(
        dataset={
            "type": "multitask_cnn.io.FiguresDataset",
            "filepath": str(out / "confusion_matrices"),
            "save_args": {"dpi": 20},
        },
        artifact_path="plots",
    )
    report = MlflowArtifactDataset(
        dataset={"type": "multitask_cnn.io.CSVDataset", "filepath": str(out / "r.csv")},
        artifact_path="reports",
    )
    # the wrapper subclasses our dataset, so our atomic save runs underneath
    assert isinstance(figures, FiguresDataset) and isinstance(report, CSVDataset)

    with mlflow.start_run(experiment_id=tracking) as run:
        figures.save({"left.png": _figure(2), "right.png": _figure(3)})
        report.save(pd.DataFrame({"task": ["left", "right"], "accuracy": [0.5, 0.75]}))

    client = MlflowClient()
    folder = "plots/confusion_matrices"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == [folder]
    logged = client.list_artifacts(run.info.run_id, folder)
    assert [a.path for a in logged] == [f"{folder}/left.png", f"{folder}/right.png"]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "reports")] == [
        "reports/r.csv"
    ]
    # the logged bytes are the saved files (no temp files logged with them)
    for name in ("left.png", "right.png"):
        local = out / "confusion_matrices" / name
        stored = tmp_path / "artifacts" / run.info.run_id / "artifacts" / folder / name
        assert stored.read_bytes() == local.read_bytes()
    downloaded = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="reports/r.csv", dst_path=tmp_path / "dl"
    )
    assert pd.read_csv(downloaded)["accuracy"].tolist() == [0.5, 0.75]
