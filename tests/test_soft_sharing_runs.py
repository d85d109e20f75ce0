"""Soft-sharing architectures through Kedro: transferred, trained with a loss-level or
a gradient-level strategy, evaluated against the single-task models, logged and
registered as an MLflow model."""

import mlflow
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow import MlflowClient

from multitask_cnn.evaluation.inference import Predictor
from multitask_cnn.models.checkpoint import load_weights_only


@pytest.mark.parametrize(
    ("architecture", "weighting"),
    [("cross_stitch", "upgrad"), ("mtan", "equal"), ("mmoe", "pcgrad")],
)
def test_a_soft_architecture_trains_evaluates_and_serves(
    prepared_project, architecture, weighting, monkeypatch
):
    project = prepared_project  # smoke data and pretrained backbone made
    bootstrap_project(project)
    params = {"model": {"architecture": architecture},
              "training": {"weighting": weighting},
              "evaluation": {"log_model": True}}  # fmt: skip
    with KedroSession.create(project_path=project, env="smoke",
                             runtime_params=params) as session:  # fmt: skip
        session.run(pipeline_names=["weight_transfer", "multitask_training",
                                    "baselines", "evaluation"])  # fmt: skip
    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("multitask-cnn-smoke")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["model.architecture"] == architecture
    assert run.info.run_name.endswith(f" · lenet {architecture} · {weighting}")
    metrics = run.data.metrics
    for task in ("left", "right"):
        assert metrics[f"test.{task}.accuracy"] > 0.2  # it learned
    assert "delta_m" in metrics
    checkpoint = load_weights_only(
        project / "data/smoke/06_models/multitask_checkpoint.pt"
    )
    assert checkpoint["config"]["model"]["architecture"] == architecture
    assert checkpoint["n_parameters"] == metrics["efficiency.parameters.multitask"]
    # the transferred backbone filled the architecture's columns, column or experts:
    # conv1 and conv2, weight and bias (the smoke mapping leaves fc out), in each
    copies = {"cross_stitch": 2, "mtan": 1, "mmoe": 3}[architecture]
    assert metrics["transfer.tensors_transferred"] == 4 * copies
    # the baselines are the backbone alone: how the tasks share is not their input
    assert not any(tag.endswith("config_differs") for tag in run.data.tags)
    # the registered model answers as the checkpoint does
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    test = load_weights_only(project / "data/smoke/05_model_input/model_input_test.pt")
    images = test["multifashion"]["images"][:20].numpy()
    answers = mlflow.pyfunc.load_model("models:/multitask-cnn@candidate").predict(
        images
    )
    predictor = Predictor(checkpoint)
    expected = predictor.predict(images)
    for task in ("left", "right"):
        names = predictor.class_names(task)
        assert answers[task].tolist() == [names[i] for i in expected[task]]
