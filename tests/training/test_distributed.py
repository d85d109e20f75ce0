"""Data-parallel training (training/distributed.py) on the CPU: two gloo workers,
launched by torch elastic from inside ``train_model``, against one process with the
same global batch; how a batch is shared; what is refused before any work."""

import contextlib
import os
import shutil
import socket
from functools import partial
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from conftest import copy_project, empty_mlflow_store
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow import MlflowClient

from multitask_cnn.config import TrainingConfig, parse_tasks
from multitask_cnn.models import build_model
from multitask_cnn.pipelines.multitask_training.nodes import train_multitask_model
from multitask_cnn.training import (
    BatchSizeError,
    DevicesError,
    GracefulStop,
    LaunchedUnderTorchrunError,
    TrainingStopped,
    check_devices,
    fuse,
    refuse_torchrun,
    train_model,
)
from multitask_cnn.training.distributed import Group
from multitask_cnn.training.sources import Batch

CPU = torch.device("cpu")
TASKS = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                     "right": {"kind": "multiclass", "num_classes": 10}})  # fmt: skip
LABELS = {"left": "left", "right": "right"}


def _budget(**settings):
    settings = {"epochs": 2, "batch_size": 64, "seed": 3, "lr": 3e-3,
                "early_stopping": {"patience": 10}} | settings  # fmt: skip
    return TrainingConfig(**settings).budget()


def test_the_training_node_on_two_gloo_workers_matches_one_process(
    model_inputs, normalisation_stats, tasks_params, tmp_path, monkeypatch
):
    """The same global batch (64: 32 rows per worker), the same training: the mean of
    two half-batch gradients is the whole batch's (LeNet: no dropout, no batch norm).
    Stated tolerance (the order of float additions differs): 1e-4 relative on every
    epoch's losses and accuracies; on the weights, 2e-3 at most (two Adam steps at lr
    1e-3) and 1e-4 on average. One MLflow run holds the epochs."""
    shutil.copy2(empty_mlflow_store(), tmp_path / "mlflow.db")
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    training = {"epochs": 2, "batch_size": 64, "seed": 1, "device": "cpu"}
    runs = {}
    for devices in (1, 2):
        with mlflow.start_run(experiment_id="0") as run:  # the store's Default
            checkpoint, history, _ = train_multitask_model(
                model_inputs[0], model_inputs[1], normalisation_stats, tasks_params, {},
                training | {"devices": devices}, {}, None, {"enabled": False},
            )  # fmt: skip
        runs[devices] = (run.info.run_id, checkpoint, history)
    (_, one, one_history), (run_id, two, two_history) = runs[1], runs[2]
    columns = ["train.loss", "val.loss", "val.left.accuracy", "val.right.accuracy"]
    assert len(two_history) == 2
    np.testing.assert_allclose(two_history[columns], one_history[columns], rtol=1e-4)
    for name, weight in one["model"].items():  # Adam's steps are about lr = 1e-3 each
        gap = (two["model"][name] - weight).abs()
        assert gap.max() < 2e-3 and gap.mean() < 1e-4, (name, gap.max(), gap.mean())
    assert "GLOO_SOCKET_IFNAME" not in os.environ  # set for the workers only
    # the workers' epochs went to this process's MLflow run, one value per epoch
    logged = MlflowClient().get_metric_history(run_id, "val.loss")
    assert [m.step for m in logged] == [1, 2]
    assert [m.value for m in logged] == pytest.approx(list(two_history["val.loss"]))


def test_a_batch_is_shared_row_by_row_and_fused_blocks_follow_their_rows():
    images = torch.arange(7.0).view(7, 1, 1, 1)
    fused = fuse([Batch(images[:3], {"a": torch.arange(3)}),
                  Batch(images[3:], {"b": torch.arange(10, 14)})])  # fmt: skip
    shares = [Group(rank, 2).shard(fused) for rank in (0, 1)]
    assert [s.images.flatten().tolist() for s in shares] == [[0, 2, 4, 6], [1, 3, 5]]
    assert shares[0].labels["a"].tolist() == [0, 2] and shares[1].labels[
        "a"
    ].tolist() == [1]
    assert shares[0].labels["b"].tolist() == [11, 13] and shares[1].labels[
        "b"
    ].tolist() == [10, 12]
    # each task's block holds its own rows of the share
    assert shares[0].rows == {"a": slice(0, 2), "b": slice(2, 4)}
    assert shares[1].rows == {"a": slice(0, 1), "b": slice(1, 3)}
    for share in shares:
        for task, rows in share.rows.items():
            assert len(share.images[rows]) == len(share.labels[task])


def test_what_cannot_be_shared_is_refused_before_any_work(mf_splits, monkeypatch):
    train, val, _ = mf_splits(LABELS)
    with pytest.raises(BatchSizeError, match="smaller than the 4 workers"):
        train_model(partial(build_model, TASKS, "lenet"), TASKS, train, val, CPU,
                    _budget(devices=4, batch_size=2))  # fmt: skip
    with pytest.raises(TypeError, match="picklable build"):
        train_model(lambda: build_model(TASKS, "lenet"), TASKS, train, val, CPU,
                    _budget(devices=2))  # fmt: skip
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DevicesError, match="has 1 CUDA device"):
        check_devices(torch.device("cuda"), 2)
    with pytest.raises(DevicesError, match="CUDA_VISIBLE_DEVICES"):
        check_devices(torch.device("cuda:1"), 2)
    with pytest.raises(ValueError, match="training.rendezvous"):
        TrainingConfig(nodes=2)
    TrainingConfig(nodes=2, rendezvous="10.0.0.1:29500")


def test_a_kedro_run_under_torchrun_is_refused_naming_what_to_ask_instead(
    tmp_path, monkeypatch
):
    with pytest.raises(LaunchedUnderTorchrunError, match="training.devices=N"):
        refuse_torchrun({"LOCAL_RANK": "0", "TORCHELASTIC_RUN_ID": "x"})
    refuse_torchrun({})  # not under torchrun
    refuse_torchrun({"LOCAL_RANK": "0", "MULTITASK_CNN_WORKER": "1"})  # our own workers
    # a Kedro session torchrun started stops before any node runs
    project = copy_project(tmp_path)
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name, value in (("LOCAL_RANK", "1"), ("TORCHELASTIC_RUN_ID", "job")):
        monkeypatch.setenv(name, value)
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="smoke") as session:
        with pytest.raises(LaunchedUnderTorchrunError, match="LOCAL_RANK=1"):
            session.run(pipeline_names=["data_prep"])
    assert not any((project / "data").iterdir())  # nothing was written


def test_a_gradient_level_strategy_trains_on_two_workers(mf_splits):
    """UPGrad aggregates each worker's own Jacobian, then the results are averaged:
    close to one process's training, not equal to it (the aggregation is not linear)."""
    train, val, _ = mf_splits(LABELS)
    listening = set()  # while the workers train: the store here, gloo's in the workers
    two = train_model(partial(build_model, TASKS, "lenet"), TASKS, train, val, CPU,
                      _budget(devices=2, epochs=1), weighting="upgrad",
                      on_epoch_end=lambda *_: listening.update(_listening(os.getpid())))  # fmt: skip
    assert listening and all(a.startswith("127.0.0.1:") for a in listening), listening
    (record,) = two.history
    assert record["val.left.accuracy"] > 0.25 and record["val.right.accuracy"] > 0.2
    assert sorted(k for k in record if k.startswith("weight.")) == [
        "weight.left",
        "weight.right",
    ]


def test_a_stop_request_stops_every_worker_after_the_same_step(mf_splits):
    """SIGTERM sets the node's GracefulStop; here the first epoch's report sets it."""
    train, val, _ = mf_splits(LABELS)
    stop, checkpoints = GracefulStop(), []

    def on_epoch_end(epoch, record):
        stop.requested = "SIGTERM"

    with pytest.raises(
        TrainingStopped, match=r"stopped by SIGTERM after epoch 2, step 1 "
    ):
        train_model(partial(build_model, TASKS, "lenet"), TASKS, train, val, CPU,
                    _budget(devices=2, epochs=3), on_epoch_end=on_epoch_end,
                    on_checkpoint=checkpoints.append, stop=stop)  # fmt: skip
    assert [c["epoch"] for c in checkpoints][:1] == [1] and len(checkpoints) < 3


def _listening(pid: int) -> set[str]:
    """``ip:port`` of the TCP sockets that process ``pid`` and its children listen on
    (Linux /proc: their socket inodes, found in /proc/net/tcp and tcp6)."""
    pids, inodes = [pid], set()
    for parent in pids:  # grows as children are found
        for task in Path(f"/proc/{parent}/task").glob("*"):
            pids += [int(c) for c in (task / "children").read_text().split()]
    for each in pids:
        for fd in Path(f"/proc/{each}/fd").glob("*"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                found.add(f"{_ip(address)}:{int(port, 16)}")
    return found


def _ip(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:  # IPv4, little-endian
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    mapped = socket.inet_ntop(socket.AF_INET6, words)
    return mapped.removeprefix("::ffff:")


def test_a_soft_sharing_model_trains_on_two_workers(mf_splits):
    """Cross-stitch with UPGrad: each worker takes every task's Jacobian row through
    the whole network (no single cut), then the gradients are averaged."""
    train, val, _ = mf_splits(LABELS)
    build = partial(build_model, TASKS, "lenet", architecture="cross_stitch")
    two = train_model(build, TASKS, train, val, CPU, _budget(devices=2, epochs=1),
                      weighting="upgrad")  # fmt: skip
    (record,) = two.history
    assert record["val.left.accuracy"] > 0.25 and record["val.right.accuracy"] > 0.2
    assert two.model.architecture == "cross_stitch"
    # the stitches learned: they moved off their start
    start = torch.full((2, 2), 0.1).fill_diagonal_(0.9)
    assert any(
        not torch.allclose(a.detach().cpu(), start) for a in two.model.stitches.values()
    )
