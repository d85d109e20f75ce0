"""The pretraining and weight_transfer nodes on small real slices."""

import numpy as np
import pytest
import torch
from conftest import SMALL_DATA_PREP

from multitask_cnn.config import ConfigError, validate_parameters
from multitask_cnn.data.multifashion import train_val_pools
from multitask_cnn.models.transfer import TransferError
from multitask_cnn.pipelines.multitask_training.nodes import train_multitask_model
from multitask_cnn.pipelines.pretraining.nodes import (
    build_pretraining_data,
    pretrain_backbone,
    summarise_pretraining,
)
from multitask_cnn.pipelines.weight_transfer.nodes import transfer_initial_state

STATS = {"mean": 0.1, "std": 0.3}
TRAINING = {"epochs": 1, "batch_size": 128, "device": "cpu"}
TASKS = {"left": {"kind": "multiclass", "num_classes": 10},
         "right": {"kind": "multiclass", "num_classes": 10}}  # fmt: skip


def _data(fashion_mnist_small, model_inputs, pretraining, pretraining_file=None):
    return build_pretraining_data(fashion_mnist_small, model_inputs[0], model_inputs[1],
                                  pretraining_file, STATS, SMALL_DATA_PREP, pretraining)  # fmt: skip


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
    # one whole item per canvas: 28x28 of ink inside a 36x36 canvas of background
    background = (0 - STATS["mean"]) / STATS["std"]
    ink = (train["images"][:50, 0] - background).abs() > 1e-4
    rows, cols = ink.any(2), ink.any(1)
    assert (rows.sum(1) <= 28).all() and (cols.sum(1) <= 28).all()
    offsets = {int(r.nonzero()[0]) for r in rows}
    assert len(offsets) > 3  # placed at varying positions

    subset, _, _ = _data(fashion_mnist_small, model_inputs, {"n_train": 100})
    assert subset["images"].shape[0] == 100


def test_multifashion_and_file_sources(fashion_mnist_small, model_inputs, tmp_path):
    train, val, task = _data(fashion_mnist_small, model_inputs,
                             {"source": "multifashion", "label": "footwear"})  # fmt: skip
    assert torch.equal(
        train["labels"]["footwear"], model_inputs[0]["labels"]["footwear"]
    )
    assert task["kind"] == "binary" and len(val["images"]) == len(
        model_inputs[1]["images"]
    )

    rng = np.random.default_rng(0)
    mine = {"images": rng.integers(0, 256, (40, 36, 36), dtype=np.uint8),
            "labels": {"class": np.arange(40) % 4}}  # fmt: skip
    train, val, task = _data(
        fashion_mnist_small, model_inputs, {"source": "file"}, mine
    )
    assert len(train["images"]) == 30 and len(val["images"]) == 10  # val_fraction 0.25
    assert task == {"kind": "multiclass", "num_classes": 4, "class_names": None}

    with pytest.raises(FileNotFoundError, match="pretraining_file catalog entry"):
        _data(fashion_mnist_small, model_inputs, {"source": "file"}, None)
    with pytest.raises(
        ValueError, match=r"images must be uint8 \(N, 36, 36\).*\(40, 28, 28\)"
    ):
        _data(fashion_mnist_small, model_inputs, {"source": "file"},
              mine | {"images": mine["images"][:, :28, :28]})  # fmt: skip
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
    pretrained = {"backbone": "convnet", "state_dict": {}}
    with pytest.raises(
        TransferError,
        match="pretrained backbone is 'convnet' but model.backbone is 'lenet'",
    ):
        transfer_initial_state(pretrained, TASKS, {}, TRAINING, {})
    with pytest.raises(TransferError, match="nowhere.pt' does not exist"):
        transfer_initial_state(
            None, TASKS, {}, TRAINING, {"checkpoint": str(tmp_path / "nowhere.pt")}
        )


def test_training_refuses_a_missing_or_foreign_initial_state(model_inputs):
    args = (model_inputs[0], model_inputs[1], STATS, TASKS, {}, TRAINING, {})
    with pytest.raises(
        FileNotFoundError, match="run the weight_transfer pipeline first"
    ):
        train_multitask_model(*args, None, {"enabled": True})
    state = {"config": {"tasks": {}, "model": {}, "seed": 0}}
    with pytest.raises(
        ValueError, match="transferred for other model, tasks than this run's"
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
