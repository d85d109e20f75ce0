"""Whole runs on other data: the fusion example (MultiFashion + digits in one model) and
a CSV manifest of three task kinds with missing labels, by configuration only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow.tracking import MlflowClient

from multitask_cnn.data.manifest import ManifestError

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _run(project: Path, env: str, **runtime_params) -> None:
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env,
                             runtime_params=runtime_params or None) as session:  # fmt: skip
        session.run()


def _last_run(project: Path, experiment: str):
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], order_by=["start_time DESC"])[0]


def test_the_fusion_example_trains_one_model_on_both_datasets(project_copy):
    _run(project_copy, "fusion_smoke")

    run = _last_run(project_copy, "multitask-cnn-fusion-smoke")
    assert run.info.status == "FINISHED"
    assert run.data.params["tasks.digit.source"] == "digits"
    assert run.data.params["training.fusion.batch_size.digits"] == "32"
    metrics = run.data.metrics
    for task in ("left", "right", "digit"):
        assert (
            0.1 < metrics[f"test.{task}.accuracy"] <= 1
        )  # better than chance (10 classes)
        assert f"val.{task}.accuracy" in metrics and f"stl.{task}.accuracy" in metrics
    assert metrics["test.digit.accuracy"] > 0.5
    checkpoint_path = (
        project_copy / "data/fusion_smoke/06_models/multitask_checkpoint.pt"
    )
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    assert set(checkpoint["normalisation"]) == {"multifashion", "digits"}
    assert checkpoint["labelled"]["digit"]["train"] > 1000  # digits train split
    assert checkpoint["labelled"]["left"]["train"] == 2700  # 3,000 composites, 10 % val
    report = json.loads(
        (project_copy / "data/fusion_smoke/08_reporting/metrics.json").read_text()
    )
    assert report["labelled"]["digit"]["test"] == report["test"]["digit"]["n"] == 359


def _sample_manifest(project: Path, n: int = 300) -> pd.DataFrame:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from make_sample_manifest import write_sample
    finally:
        sys.path.pop(0)
    return write_sample(project / "data/01_raw/manifest", n, 0.3, 0)


FAST = {
    "training": {"epochs": 2},
    "pretraining": {"n_train": 1000, "training": {"epochs": 1}},
}


def test_a_manifest_with_three_kinds_and_missing_labels_trains_by_configuration(
    project_copy,
):
    table = _sample_manifest(project_copy)
    _run(project_copy, "manifest_example", **FAST)

    run = _last_run(project_copy, "multitask-cnn-manifest-example")
    metrics = run.data.metrics
    assert {"test.digit.accuracy", "test.digit.f1_macro", "test.parity.accuracy",
            "test.parity.f1_macro", "test.ink.mae", "test.ink.rmse"} <= set(metrics)  # fmt: skip
    assert "tasks.left.kind" not in run.data.params  # removed by `left: null`
    assert metrics["labelled.ink.test"] == int(
        (table["ink"][table["split"] == "test"] != "").sum()
    )
    assert (
        0 < metrics["test.ink.mae"] < 0.5
    )  # in the label's units (share of inked pixels)
    report = json.loads(
        (project_copy / "data/manifest_example/08_reporting/metrics.json").read_text()
    )
    test_rows = table["split"] == "test"
    for task in ("digit", "parity", "ink"):  # masked: only labelled rows are scored
        assert report["test"][task]["n"] == int((table[task][test_rows] != "").sum())
        train_rows = table["split"] == "train"
        assert report["labelled"][task]["train"] == int(
            (table[task][train_rows] != "").sum()
        )
    # the same manifest over the memory budget streams from a memory-mapped cache:
    # the same data (the baselines are reused: same fingerprints), the same model
    _run(
        project_copy,
        "manifest_example",
        **FAST,
        data_prep={"manifest": {"memory_budget_mb": 0.01}},
    )
    streamed = _last_run(project_copy, "multitask-cnn-manifest-example")
    model_input = project_copy / "data/manifest_example/05_model_input"
    (key,) = list((model_input / "manifest_cache").iterdir())  # named by the plan's key
    assert sorted(p.name for p in key.iterdir()) == ["test.npy", "train.npy", "val.npy"]
    assert (
        model_input / "model_input_train.pt"
    ).stat().st_size < 100_000  # refers to it
    assert streamed.data.params["data_prep.manifest.memory_budget_mb"] == "0.01"
    for key in ("test.digit.accuracy", "test.parity.f1_macro", "test.ink.rmse"):
        assert streamed.data.metrics[key] == pytest.approx(metrics[key], rel=1e-6)
    assert streamed.data.metrics["stl.digit.accuracy"] == metrics["stl.digit.accuracy"]
    assert streamed.data.tags["stl.digit.reused"] == "True"
    data_report = pd.read_csv(
        project_copy / "data/manifest_example/08_reporting/data_report.csv"
    )
    assert set(data_report["source"]) == {"manifest"}
    assert "nine" in set(data_report.query("label == 'digit'")["class_name"])


def test_a_bad_manifest_stops_the_run_naming_row_and_column_and_writes_nothing(
    project_copy,
):
    _sample_manifest(project_copy, n=60)
    path = project_copy / "data/01_raw/manifest/manifest.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.loc[17, "ink"] = "lots"
    table.to_csv(path, index=False)
    with pytest.raises(
        ManifestError,
        match=r"row 17 \(CSV line 19\), column 'ink': regression target 'lots'",
    ):
        _run(project_copy, "manifest_example", **FAST)
    assert not (project_copy / "data/manifest_example").exists()
