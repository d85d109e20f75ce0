"""The transfer chain through Kedro sessions into a temporary MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

CHAIN = ["pretraining", "weight_transfer", "multitask_training", "evaluation"]


def _run(project: Path, pipelines: list[str], **runtime_params) -> None:
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="smoke",
                             runtime_params=runtime_params or None) as session:  # fmt: skip
        session.run(pipeline_names=pipelines)


def _last_run(project: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("multitask-cnn-smoke")
    run = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"])[
        0
    ]
    return client, run


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_pretraining_weight_transfer_training_and_evaluation_in_one_run(project_copy):
    _run(project_copy, ["data_prep", "baselines"], transfer={"enabled": False})
    _run(project_copy, CHAIN, transfer={"freeze_epochs": 1, "lr_scale": 0.5})
    client, run = _last_run(project_copy)
    assert run.info.status == "FINISHED"
    metrics, run_id = run.data.metrics, run.info.run_id

    # pretraining: its own curves and metrics under pretrain.*
    history = client.get_metric_history(run_id, "pretrain.val.class.accuracy")
    assert [m.step for m in history] == [1, 2]
    assert metrics["pretrain.best.val.class.accuracy"] == pytest.approx(
        max(m.value for m in history)
        if metrics["pretrain.best_epoch"] == 2
        else history[0].value
    )
    assert metrics["pretrain.reused"] == 0
    assert metrics["pretrain.parameters"] == 30890  # the LeNet backbone
    # transfer: the report as an artifact, its counts as metrics
    artifacts = _artifacts(client, run_id)
    assert {"reports/transfer_report.json", "model/pretrained_backbone.pt",
            "reports/pretraining_history.csv"} <= artifacts  # fmt: skip
    report = json.loads(
        (project_copy / "data/smoke/08_reporting/transfer_report.json").read_text()
    )
    assert report["source"]["pretrained"]["run_id"] == run_id
    assert report["counts"]["tensors_transferred"] == 4  # conv1, conv2: weight, bias
    assert metrics["transfer.tensors_transferred"] == 4
    assert metrics["transfer.parameters_transferred"] == 820 + 5020
    assert metrics["transfer.tensors_skipped"] == 6  # fc (by default), the heads
    by_target = {e["target"]: e for e in report["tensors"]}
    assert by_target["shared.conv1.0.weight"]["source"] == "backbone.conv1.0.weight"
    assert by_target["heads.left.0.bias"]["reason"] == "no source tensor"
    assert by_target["shared.fc.1.weight"]["reason"] == "excluded by 'backbone.fc.*'"
    # training started from the transfer, frozen for one epoch
    frozen = client.get_metric_history(run_id, "transfer.frozen_parameters")
    assert [(m.step, m.value) for m in frozen] == [(1, 5840), (2, 0)]
    checkpoint = torch.load(project_copy / "data/smoke/06_models/multitask_checkpoint.pt",
                            weights_only=True)  # fmt: skip
    transfer = checkpoint["config"]["transfer"]
    assert (
        transfer["enabled"]
        and transfer["freeze_epochs"] == 1
        and transfer["lr_scale"] == 0.5
    )
    assert transfer["source"]["pretrained"]["run_id"] == run_id
    assert 0 <= metrics["test.left.accuracy"] <= 1 and "delta_m" in metrics
    # the baselines it compared against were trained from scratch: the run says so
    assert "transfer.enabled" in run.data.tags["stl.left.config_differs"].split(",")

    # unchanged inputs: the pretraining is reused, not repeated
    _run(project_copy, ["pretraining"])
    client, rerun = _last_run(project_copy)
    assert rerun.data.metrics["pretrain.reused"] == 1
    assert (
        client.get_metric_history(rerun.info.run_id, "pretrain.val.class.accuracy")
        == []
    )
    assert rerun.data.metrics["pretrain.best.val.class.accuracy"] == pytest.approx(
        metrics["pretrain.best.val.class.accuracy"]
    )

    # from scratch: no initial state needed, none recorded
    (project_copy / "data/smoke/06_models/initial_state.pt").unlink()
    _run(project_copy, ["multitask_training"], transfer={"enabled": False})
    checkpoint = torch.load(project_copy / "data/smoke/06_models/multitask_checkpoint.pt",
                            weights_only=True)  # fmt: skip
    assert checkpoint["config"]["transfer"]["enabled"] is False
    assert checkpoint["config"]["transfer"]["source"] is None


def test_transfer_from_a_file_that_is_not_a_checkpoint_names_it(project_copy):
    (project_copy / "data/01_raw").mkdir(parents=True)
    (project_copy / "data/01_raw/weights.pt").write_text("not weights")
    _run(project_copy, ["data_prep"])
    with pytest.raises(Exception, match=r"weights.pt is not a file torch.save wrote"):
        _run(
            project_copy,
            ["weight_transfer"],
            transfer={"checkpoint": "data/01_raw/weights.pt"},
        )
    assert not (project_copy / "data/smoke/06_models/initial_state.pt").exists()
