"""The pretraining and weight_transfer nodes on small real slices."""

import numpy as np
import pytest
import torch
from conftest import SMALL_DATA_PREP

from multitask_cnn.config import ConfigError, validate_parameters
from multitask_cnn.data.multifashion import train_val_pools
from multitask_cnn.data.tensors import image_stats
from multitask_cnn.errors import DataFileError
from multitask_cnn.models.transfer import TransferError
from multitask_cnn.pipelines.multitask_training.nodes import train_multitask_model
from multitask_cnn.pipelines.pretraining.nodes import (
    build_pretraining_data,
    pretrain_backbone,
    summarise_pretraining,
)
from multitask_cnn.pipelines.weight_transfer.nodes import transfer_initial_state

STATS = {"mean": 0.1, "std": 0.3}
NORMALISATION = {"multifashion": STATS}  # data_prep's statistics, per source
TRAINING = {"epochs": 1, "batch_size": 128, "device": "cpu"}
TASKS = {"left": {"kind": "multiclass", "num_classes": 10},
         "right": {"kind": "multiclass", "num_classes": 10}}  # fmt: skip


def _data(fashion_mnist_small, model_inputs, pretraining, pretraining_file=None,
          normalisation=NORMALISATION):  # fmt: skip
    return build_pretraining_data(fashion_mnist_small, model_inputs[0], model_inputs[1],
                                  pretraining_file, normalisation, SMALL_DATA_PREP, pretraining)  # fmt: skip


def test_single_items_come_from_the_train_pool_and_val_from_the_val_pool(
    fashion_mnist_small, model_inputs
):
    train, val, task = _data(fashion_mnist_small, model_inputs, {})
    pools = train_val_pools(
        fashion_mnist_small.train_labels, 0.25, SMALL_DATA_PREP["seed"]
    )
    assert train["images"].shape == (len(pools[0]), 1, 36, 36)
    assert val["images"].shape == (len(pools[1]), 1, 36, 36)
    assert torch.equal(train["labels"]["class"],
                       torch.from_numpy(fashion_mnist_small.train_labels[pools[0]]).long())  # fmt: skip
    assert task == {"kind": "multiclass", "num_classes": 10,
                    "class_names": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]}  # fmt: skip
    # uint8 like the model input, normalised when read with MultiFashion's statistics
    # (the input the transferred weights will see)
    assert train["images"].dtype == val["images"].dtype == torch.uint8
    assert train["normalisation"] == val["normalisation"] == STATS
    # one whole item per canvas: 28x28 of ink inside a 36x36 canvas of background
    ink = train["images"][:50, 0] > 0
    rows, cols = ink.any(2), ink.any(1)
    assert (rows.sum(1) <= 28).all() and (cols.sum(1) <= 28).all()
    offsets = {int(r.nonzero()[0]) for r in rows}
    assert len(offsets) > 3  # placed at varying positions

    subset, _, _ = _data(fashion_mnist_small, model_inputs, {"n_train": 100})
    assert subset["images"].shape[0] == 100

    # no MultiFashion statistics (no task reads it): the items' own train statistics
    own, own_val, _ = _data(fashion_mnist_small, model_inputs, {}, normalisation={})
    assert torch.equal(own["images"], train["images"])
    assert (
        own["normalisation"] == own_val["normalisation"] == image_stats(train["images"])
    )
    assert own["normalisation"]["mean"] != pytest.approx(STATS["mean"], abs=1e-3)


def test_multifashion_and_file_sources(fashion_mnist_small, model_inputs, tmp_path):
    train, val, task = _data(fashion_mnist_small, model_inputs,
                             {"source": "multifashion", "label": "footwear"})  # fmt: skip
    multifashion = [m["multifashion"] for m in model_inputs[:2]]
    assert torch.equal(train["images"], multifashion[0]["images"])  # uint8 as is
    assert torch.equal(
        train["labels"]["footwear"], multifashion[0]["labels"]["footwear"]
    )
    assert set(train["labels"]) == {"footwear"} and train["normalisation"] == STATS
    assert task["kind"] == "binary" and torch.equal(
        val["images"], multifashion[1]["images"]
    )

    rng = np.random.default_rng(0)
    mine = {"images": rng.integers(0, 256, (40, 36, 36), dtype=np.uint8),
            "labels": {"class": np.arange(40) % 4}}  # fmt: skip
    train, val, task = _data(
        fashion_mnist_small, model_inputs, {"source": "file"}, mine
    )
    # stratified like data_prep: round(0.25 * 10) = 2 of each class's 10 images
    assert len(train["images"]) == 32 and len(val["images"]) == 8
    assert (
        train["images"].shape == (32, 1, 36, 36)
        and train["images"].dtype == torch.uint8
    )
    assert train["normalisation"] == STATS
    assert torch.bincount(val["labels"]["class"]).tolist() == [2, 2, 2, 2]
    assert task == {"kind": "multiclass", "num_classes": 4, "class_names": None}

    with pytest.raises(DataFileError, match="pretraining_file catalog entry"):
        _data(fashion_mnist_small, model_inputs, {"source": "file"}, None)
    with pytest.raises(
        ValueError, match=r"images must be uint8 \(N, 36, 36\).*\(40, 28, 28\)"
    ):
        _data(fashion_mnist_small, model_inputs, {"source": "file"},
              mine | {"images": mine["images"][:, :28, :28]})  # fmt: skip
    with pytest.raises(ValueError, match="must hold one integer class id per image"):
        _data(fashion_mnist_small, model_inputs, {"source": "file"},
              mine | {"labels": {"class": np.linspace(0, 3, 40)}})  # fmt: skip
    with pytest.raises(ValueError, match=r"grey like the canvas .*\(40, 3, 36, 36\)"):
        _data(fashion_mnist_small, model_inputs, {"source": "file"},
              mine | {"images": np.zeros((40, 3, 36, 36), np.uint8)})  # fmt: skip
    with pytest.raises(ValueError, match="has no label 'kind'"):
        _data(
            fashion_mnist_small, model_inputs, {"source": "file", "label": "kind"}, mine
        )


def test_pretraining_is_reused_while_its_inputs_are_unchanged(
    fashion_mnist_small, model_inputs
):
    train, val, task = _data(fashion_mnist_small, model_inputs, {"n_train": 300})
    args = (train, val, task, {"backbone": "lenet"}, TRAINING, {})
    first, history = pretrain_backbone(*args, None, {"mlflow.run_id": "r1"})
    assert len(history) == 1 and not first["reused"]
    assert set(first["state_dict"]) == {f"backbone.{n}" for n in (
        "conv1.0.weight", "conv1.0.bias", "conv2.0.weight", "conv2.0.bias", "fc.1.weight", "fc.1.bias")}  # fmt: skip
    summary = summarise_pretraining(first)
    assert summary["pretrain.parameters"]["value"] == 30890
    assert 0 < summary["pretrain.best.val.class.accuracy"]["value"] <= 1

    again, history = pretrain_backbone(*args, first, {"mlflow.run_id": "r2"})
    assert again["reused"] and history.empty
    assert again["provenance"]["mlflow.run_id"] == "r1"
    other, _ = pretrain_backbone(train, val, task, {"backbone": "lenet"},
                                 TRAINING | {"seed": 9}, {}, first, {})  # fmt: skip
    assert not other["reused"] and other["pretraining_key"] != first["pretraining_key"]


def test_weight_transfer_refuses_a_missing_or_mismatched_source(tmp_path):
    with pytest.raises(
        TransferError, match="no pretrained backbone .* run the pretraining"
    ):
        transfer_initial_state(None, TASKS, {}, TRAINING, {})
    with pytest.raises(TransferError, match="not written by the pretraining pipeline"):
        transfer_initial_state(
            {"backbone": "lenet", "state_dict": {}}, TASKS, {}, TRAINING, {}
        )
    with pytest.raises(
        TransferError, match="pretrained as .*'convnet'.* but the model is .*'lenet'"
    ):
        transfer_initial_state(
            _pretrained() | {"backbone": "convnet"}, TASKS, {}, TRAINING, {}
        )
    with pytest.raises(TransferError, match="nowhere.pt' does not exist"):
        transfer_initial_state(
            None, TASKS, {}, TRAINING, {"checkpoint": str(tmp_path / "nowhere.pt")}
        )


def test_training_refuses_a_missing_or_foreign_initial_state(model_inputs):
    args = (model_inputs[0], model_inputs[1], NORMALISATION, TASKS, {}, TRAINING, {})
    with pytest.raises(TransferError, match="run the weight_transfer pipeline first"):
        train_multitask_model(*args, None, {"enabled": True})
    state = {"config": {"tasks": {}, "model": {}, "seed": 0, "transfer": {}}}
    with pytest.raises(
        ValueError,
        match="built with other model, tasks, transfer settings than this run's",
    ):
        train_multitask_model(*args, state, {"enabled": True})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"pretraining": {"source": "imagenet"}},
            "unknown pretraining source 'imagenet'",
        ),
        (
            {"pretraining": {"source": "multifashion", "label": "top"}},
            "MultiFashion has",
        ),
        (
            {"pretraining": {"training": {"optimiser": "adam"}}},
            "pretraining.training.optimiser",
        ),
        ({"transfer": {"channel_adapt": "max"}}, "transfer.channel_adapt"),
        ({"transfer": {"lr_scale": 0}}, "transfer.lr_scale"),
    ],
)
def test_bad_pretraining_and_transfer_parameters_are_named(params, message):
    with pytest.raises(ConfigError, match=message):
        validate_parameters({"tasks": TASKS} | params)


def _pretrained(**backbone_args):
    from multitask_cnn.config import ModelConfig
    from multitask_cnn.models import get_backbone
    from multitask_cnn.models.transfer import backbone_state_dict
    from multitask_cnn.pipelines.pretraining.nodes import PRETRAINED_FORMAT

    torch.manual_seed(7)
    effective = ModelConfig(backbone="lenet", backbone_args=backbone_args).effective()
    return {"format": PRETRAINED_FORMAT, "backbone": "lenet",
            "backbone_args": effective["backbone_args"], "provenance": {"mlflow.run_id": "p1"},
            "state_dict": backbone_state_dict(get_backbone("lenet", **backbone_args))}  # fmt: skip


@pytest.mark.parametrize(
    ("include", "moved"),
    [(["*"], ["conv1", "conv2"]), (["shared.*"], ["conv1"])],
)
def test_each_baseline_starts_from_the_multitask_models_transferred_tensors(
    include, moved
):
    model = {"backbone": "lenet", "shared_stages": 1}
    state, report, metrics = transfer_initial_state(
        _pretrained(), TASKS, model, TRAINING, {"include": include})  # fmt: skip
    assert report["source"]["pretrained"]["run_id"] == "p1"
    assert metrics["transfer.tensors_transferred"]["value"] == (
        6 if len(moved) == 2 else 2
    )
    for task in ("left", "right"):
        baseline = state["baselines"][task]
        expected = {f"shared.{stage}.{i}.{p}" for stage, i in
                    (("conv1", 0), ("conv2", 0), ("fc", 1)) if stage in moved
                    for p in ("weight", "bias")}  # fmt: skip
        assert set(baseline["transferred"]) == expected
        assert report["baselines"][task]["tensors_transferred"] == len(expected)
        for name in expected:  # the very tensors the multi-task model starts from
            stage = name.removeprefix("shared.")
            origin = (
                name if stage.startswith("conv1") else f"task_stages.{task}.{stage}"
            )
            assert torch.equal(
                baseline["state_dict"][name], state["state_dict"][origin]
            )
    assert state["config"]["transfer"] == {"checkpoint": None, "include": include, "exclude": ["backbone.fc.*"],
                                           "renames": [], "channel_adapt": "sum"}  # fmt: skip


def test_a_backbone_pretrained_with_other_arguments_is_refused():
    with pytest.raises(
        TransferError, match="pretrained as .*'hidden': 40.* but the model is"
    ):
        transfer_initial_state(_pretrained(hidden=40), TASKS, {}, TRAINING, {})


def test_training_refuses_an_initial_state_built_with_another_mapping(model_inputs):
    tasks_model = ({"backbone": "lenet"}, TRAINING)
    state, _, _ = transfer_initial_state(
        _pretrained(), TASKS, *tasks_model, {"exclude": ["heads.*"]}
    )
    args = (
        model_inputs[0],
        model_inputs[1],
        NORMALISATION,
        TASKS,
        {"backbone": "lenet"},
        TRAINING,
        {},
    )
    with pytest.raises(ValueError, match="built with other transfer settings"):
        train_multitask_model(*args, state, {"exclude": ["*.bias"]})


def test_a_failing_transfer_does_not_stop_a_run_from_scratch(model_inputs):
    state, report, metrics = transfer_initial_state(
        None, TASKS, {}, TRAINING, {"enabled": False}
    )
    assert "no pretrained backbone" in report["error"] and metrics == {}
    args = (model_inputs[0], model_inputs[1], NORMALISATION, TASKS, {}, TRAINING, {})
    checkpoint, _, _ = train_multitask_model(*args, state, {"enabled": False})
    assert checkpoint["config"]["transfer"]["source"] is None
    with pytest.raises(ValueError, match="could not transfer: no pretrained backbone"):
        train_multitask_model(*args, state, {"enabled": True})
