"""Whole-project runs through a Kedro session (and the CLI) into a temporary store."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import git_commit_all
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow.tracking import MlflowClient

from multitask_cnn.config import ConfigError
from multitask_cnn.errors import UserError

pytestmark = pytest.mark.slow


def _run(project: Path, only_missing_outputs: bool = False,
         pipelines: list[str] | None = None, **runtime_params) -> None:  # fmt: skip
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="smoke",
                             runtime_params=runtime_params or None) as session:  # fmt: skip
        session.run(pipeline_names=pipelines, only_missing_outputs=only_missing_outputs)


def _client(project: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_smoke_pipeline_records_everything_in_mlflow(smoke_run):
    project_copy = smoke_run  # run with the default training.lr given as --params
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_copy,
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip

    client = _client(project_copy)
    experiment = client.get_experiment_by_name("multitask-cnn-smoke")
    assert experiment.artifact_location == f"file://{project_copy}/mlruns"
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"

    params = run.data.params  # every consumed parameter, flattened, as it ran
    assert params["training.lr"] == "0.001"
    assert params["training.epochs"] == "2"  # the smoke override
    assert params["training.early_stopping.patience"] == "3"  # a default, filled in
    assert params["tasks.left.kind"] == "multiclass"
    assert params["tasks.left.label"] == "left"  # filled in
    assert params["data_prep.n_train"] == "3000"
    assert params["model.backbone"] == "lenet"
    assert params["model.backbone_args.hidden"] == "50"  # the backbone's own default
    assert params["evaluation.device"] == "auto"

    # live per-epoch curves
    for key in ("train.loss", "val.left.accuracy", "val.right.accuracy", "weight.left"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [
            1,
            2,
        ]

    # final per-task metrics agree with the metrics JSON on disk
    reported = json.loads(
        (project_copy / "data/smoke/08_reporting/metrics.json").read_text()
    )
    for task in ("left", "right"):
        for metric in ("accuracy", "f1_macro"):
            value = run.data.metrics[f"test.{task}.{metric}"]
            assert 0.0 <= value <= 1.0
            assert value == pytest.approx(reported["test"][task][metric])
        assert reported["test"][task]["n"] == 1000
    assert run.data.metrics["train.best_epoch"] in (1, 2)
    assert (
        run.data.metrics["model.parameters"] == 30890 + 2 * 510
    )  # LeNet + two 50→10 heads

    assert _artifacts(client, run.info.run_id) == {
        "model/multitask_checkpoint.pt",
        "plots/confusion_matrices/confusion_matrix_left.png",
        "plots/report_plots/curves_left.png",
        "plots/report_plots/curves_right.png",
        "plots/report_plots/multitask_vs_single_task.png",
        "plots/confusion_matrices/confusion_matrix_right.png",
        "reports/metrics.json",
        "reports/training_history.csv",
        "reports/data_report.csv",
        "environment/requirements.lock",
        "model/baselines/left.pt",
        "model/baselines/right.pt",
        "reports/baseline_history.csv",
        "reports/baseline_metrics.json",
        "reports/comparison.json",
        "reports/efficiency.json",
        "reports/efficiency.md",
        "model/pretrained_backbone.pt",
        "reports/pretraining_history.csv",
        "reports/transfer_report.json",
        "reports/insight.json",
        "reports/insight.md",
        "plots/insight_plots/sharing.png",
        "plots/insight_plots/saliency.png",
        "plots/insight_plots/robustness.png",
        "plots/insight_plots/generalisation.png",
    }
    # the insight the smoke env asks for: every part, with the single-task models
    # beside the multi-task one
    insight = json.loads(
        (project_copy / "data/smoke/08_reporting/insight.json").read_text()
    )
    metrics = run.data.metrics
    sharing = insight["sharing"]
    assert sharing["stages"] == ["conv1", "conv2", "fc"] and sharing["pairs"] == [
        ["left", "right"]
    ]
    assert metrics["sharing.cka.fc.left.right"] == pytest.approx(
        sharing["cka"]["fc"][0]
    )
    assert 0 < metrics["sharing.cka.conv1.left.right"] <= 1
    assert -1 <= metrics["sharing.gradient_cosine.conv2.left.right"] <= 1
    assert metrics["sharing.recommended_shared_stages"] in (0, 1, 2, 3)
    assert insight["saliency"]["stage"] == "conv2"
    for prefix in ("", "stl."):
        assert 0 <= metrics[f"{prefix}saliency.top_left_mass.left"] <= 1
    clean, *corrupted = insight["robustness"]["rows"]
    assert [(r["corruption"], r["severity"]) for r in corrupted][:3] == [
        ("gaussian_noise", 1),
        ("gaussian_noise", 3),
        ("gaussian_noise", 5),
    ]
    assert len(corrupted) == 5 * 3
    for prefix, model in (("", "multitask"), ("stl.", "single_task")):
        assert metrics[f"{prefix}robust.clean.left.accuracy"] == pytest.approx(
            clean["scores"][model]["left"]
        )
        assert metrics[f"{prefix}robust.occlusion.5.right.accuracy"] == pytest.approx(
            corrupted[-1]["scores"][model]["right"]
        )
        assert 0 < metrics[f"{prefix}robust.relative.left"] < 1.5
        for split in ("train", "val", "test", "shifted"):
            assert 0 <= metrics[f"{prefix}generalisation.{split}.left.accuracy"] <= 1
    # the clean rows are the evaluation's test predictions (the whole smoke test split)
    assert metrics["robust.clean.left.accuracy"] == pytest.approx(
        metrics["test.left.accuracy"]
    )
    assert metrics["stl.robust.clean.left.accuracy"] == pytest.approx(
        metrics["stl.left.accuracy"]
    )
    assert metrics["generalisation.gap.left"] == pytest.approx(
        metrics["generalisation.train.left.accuracy"]
        - metrics["generalisation.test.left.accuracy"]
    )
    # the strongest occlusion hides half the canvas side: every model loses accuracy
    assert (
        corrupted[-1]["scores"]["multitask"]["left"]
        < clean["scores"]["multitask"]["left"]
    )
    # the single-task baselines, trained in the same run, and Δm against them
    assert 0 <= run.data.metrics["stl.left.accuracy"] <= 1
    assert math.isfinite(run.data.metrics["delta_m"])
    assert run.data.metrics["delta_m"] == pytest.approx(
        (run.data.metrics["delta_m.left"] + run.data.metrics["delta_m.right"]) / 2
    )
    assert [
        m.step for m in client.get_metric_history(run.info.run_id, "stl.left.val.loss")
    ] == [1, 2]
    assert run.data.tags["stl.left.run_id"] == run.info.run_id
    assert run.data.metrics["stl.left.parameters"] == 30890 + 510  # LeNet + one head
    assert run.data.metrics["efficiency.parameters.ratio"] == pytest.approx(
        (30890 + 2 * 510) / (2 * (30890 + 510))
    )
    assert run.data.metrics["efficiency.macs_per_image.multitask"] == 1_161_040
    # one task alone: the shared LeNet and one head, what its single-task model costs
    assert run.data.metrics["efficiency.macs_per_image.task.left"] == 1_160_540
    assert (
        run.data.metrics["efficiency.throughput.ratio"] > 1
    )  # one pass serves both tasks
    assert run.data.tags["stl.left.reused"] == "False"
    tags = run.data.tags  # what a teammate needs to repeat the run
    assert tags["kedro.env"] == "smoke"
    assert tags["kedro_command"] == "kedro run --env=smoke --params=training.lr=0.001"
    assert json.loads(tags["kedro.params"]) == {"training": {"lr": 0.001}}
    # named after its pipeline, backbone and strategy
    assert run.info.run_name == "default · lenet · equal"
    # the UI opens the experiment as model training, with a description
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "one convolutional network" in experiment.tags["mlflow.note.content"]
    assert tags["git.commit"] == commit
    assert tags["git.dirty"] == "false"  # data/ and mlflow.db are git-ignored
    assert tags["torch.version"].startswith("2.14.1")
    lock = (project_copy / "requirements.lock").read_bytes()
    assert tags["requirements.lock.sha256"] == hashlib.sha256(lock).hexdigest()
    test = torch.load(project_copy / "data/smoke/05_model_input/model_input_test.pt",
                      weights_only=True)  # fmt: skip
    assert tags["data.build.multifashion"] == test["multifashion"]["build"]
    assert (
        tags["checkpoint.run_id"] == run.info.run_id
    )  # evaluation used this run's model
    checkpoint = torch.load(project_copy / "data/smoke/06_models/multitask_checkpoint.pt",
                            weights_only=True)  # fmt: skip
    assert checkpoint["provenance"]["mlflow.run_id"] == run.info.run_id
    assert checkpoint["provenance"]["git.commit"] == commit
    assert checkpoint["config"]["training"]["epochs"] == 2
    umask = os.umask(0)
    os.umask(umask)
    mode = (project_copy / "data/smoke/06_models/train_state.pt").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask  # the user's umask, not mkstemp's 0600
    history = pd.read_csv(project_copy / "data/smoke/08_reporting/training_history.csv")
    assert history["epoch"].tolist() == [1, 2]
    png = (
        project_copy
        / "data/smoke/08_reporting/confusion_matrices/confusion_matrix_left.png"
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("weighting", ["uncertainty", "upgrad"])
def test_a_loss_level_and_a_torchjd_strategy_through_kedro(prepared_project, weighting):
    project = prepared_project  # its data and transferred weights made: train
    _run(project, pipelines=["multitask_training"],
         training={"weighting": weighting, "grad_cos_rows": 128})  # fmt: skip
    client = _client(project)
    experiment = client.get_experiment_by_name("multitask-cnn-smoke")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["training.weighting"] == weighting
    for task in ("left", "right"):
        history = client.get_metric_history(run.info.run_id, f"weight.{task}")
        assert [m.step for m in history] == [1, 2]
        assert all(0 < m.value < 2 for m in history)
        assert run.data.metrics[f"val.{task}.accuracy"] > 0.2  # it learned
    weights = {(t, m.step): m.value for t in ("left", "right")
               for m in client.get_metric_history(run.info.run_id, f"weight.{t}")}  # fmt: skip
    assert (
        len(set(weights.values())) > 1
    )  # adapted over epochs or between tasks, not fixed
    cosines = client.get_metric_history(run.info.run_id, "grad_cos.left.right")
    assert [m.step for m in cosines] == [1, 2] and all(
        -1 <= m.value <= 1 for m in cosines
    )
    state = torch.load(
        project / "data/smoke/06_models/train_state.pt", weights_only=True
    )
    if weighting == "uncertainty":  # its learned log-variances are in the train state
        assert state["strategy"]["scalarizer"]["log_var"].abs().sum() > 0


def test_rerun_with_only_missing_outputs_records_a_complete_run(project_copy):
    commit = git_commit_all(project_copy)
    _run(project_copy)
    checkpoint = project_copy / "data/smoke/06_models/multitask_checkpoint.pt"
    written = checkpoint.stat().st_mtime_ns
    (project_copy / "later.txt").write_text("a later, dirty tree\n")  # untracked
    _run(project_copy, only_missing_outputs=True)

    assert checkpoint.stat().st_mtime_ns == written  # not retrained
    client = _client(project_copy)
    experiment = client.get_experiment_by_name("multitask-cnn-smoke")
    second, first = client.search_runs(
        [experiment.experiment_id], order_by=["start_time DESC"]
    )
    assert (
        "train.loss" in first.data.metrics and "train.loss" not in second.data.metrics
    )
    # the rerun's run is complete: every parameter, every artifact, and what it reused
    assert second.data.params == first.data.params
    assert _artifacts(client, second.info.run_id) == _artifacts(
        client, first.info.run_id
    )
    reused = second.data.tags["kedro.reused_nodes"].split(",")
    assert {"train_multitask_model", "predict_test", "compose_splits"} <= set(reused)
    assert "kedro.reused_nodes" not in first.data.tags
    # ...and says which run and commit trained the model it reports on
    assert second.data.tags["checkpoint.run_id"] == first.info.run_id
    assert second.data.tags["checkpoint.git_commit"] == commit
    assert first.data.tags["git.dirty"] == "false"
    assert second.data.tags["git.dirty"] == "true"  # the rerun's own tree: untracked
    for key in ("test.left.accuracy", "test.right.f1_macro", "train.best_epoch"):
        assert second.data.metrics[key] == first.data.metrics[key]
    reported = json.loads(
        (project_copy / "data/smoke/08_reporting/metrics.json").read_text()
    )
    assert reported["checkpoint"]["provenance"]["mlflow.run_id"] == first.info.run_id
    assert "checkpoint.config_differs" not in second.data.tags

    # a rerun after a parameter change reuses the old model, and says so
    _run(project_copy, only_missing_outputs=True, training={"lr": 0.01})
    third = client.search_runs(
        [experiment.experiment_id], order_by=["start_time DESC"]
    )[0]
    assert third.data.params["training.lr"] == "0.01"
    assert third.data.tags["checkpoint.config_differs"] == "training.lr"
    assert (
        third.data.tags["stl.left.config_differs"] == "training.lr"
    )  # stale baselines too


def test_bad_parameter_stops_before_any_work(project_copy):
    with pytest.raises(
        ConfigError, match=r"parameter 'training.epochs' .*valid integer"
    ):
        _run(project_copy, training={"epochs": "abc"})
    assert not (project_copy / "data/smoke").exists()  # no node ran
    # kedro-mlflow may have set up the experiment, but no run was started
    experiment = _client(project_copy).get_experiment_by_name("multitask-cnn-smoke")
    assert experiment is None or not _client(project_copy).search_runs(
        [experiment.experiment_id]
    )


def test_unavailable_device_stops_before_any_work(project_copy, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(
        ConfigError, match="'training.device': device 'cuda' but CUDA is not"
    ):
        _run(project_copy, training={"device": "cuda"})
    assert not (project_copy / "data/smoke").exists()


def test_missing_data_folder_stops_before_training(project_copy):
    (project_copy / "conf/smoke/catalog.yml").write_text(
        "fashion_mnist:\n"
        "  type: multitask_cnn.io.FashionMNISTDataset\n"
        "  path: data/01_raw/nowhere\n"
        "  fallback_paths: []\n"
    )
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, env="smoke") as session:
        with pytest.raises(
            Exception, match=r"Fashion-MNIST not found(.|\n)*nowhere \(missing\)"
        ):
            session.run()
    assert not (project_copy / "data/smoke/05_model_input").exists()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"tasks": {"left": {"kind": "ordinal"}}}, "parameter 'tasks.left.kind'"),
        ({"training": {"batch_size": "big"}}, "parameter 'training.batch_size'"),
        (
            {"training": {"weighting": "magic"}},
            "unknown weighting 'magic'; choose from ['aligned_mtl', 'cagrad', 'config'",
        ),
    ],
)
def test_bad_parameters_are_rejected_with_a_clear_message(
    project_copy, params, expected
):
    # (as `--params` gives them; the CLI's one-line message for these errors:
    # tests/test_user_errors.py)
    with pytest.raises(UserError) as raised:
        _run(project_copy, **params)
    assert expected in str(raised.value)
    assert not (project_copy / "data/smoke").exists()
