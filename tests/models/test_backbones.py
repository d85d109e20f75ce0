import pytest
import torch
import torchvision
from torch import nn

from multitask_cnn.config import parse_tasks
from multitask_cnn.models import (
    BACKBONES,
    backbone_defaults,
    build_model,
    get_backbone,
    register_backbone,
)
from multitask_cnn.registry import UnknownNameError


def test_lenet_is_the_pareto_mtl_architecture():
    backbone = get_backbone("lenet")
    assert backbone.stage_names == ["conv1", "conv2", "fc"]
    conv1, conv2 = backbone.stages["conv1"][0], backbone.stages["conv2"][0]
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size) == (1, 10, (9, 9))
    assert (conv2.in_channels, conv2.out_channels, conv2.kernel_size) == (
        10,
        20,
        (5, 5),
    )
    assert isinstance(backbone.stages["conv1"][2], nn.MaxPool2d)
    fc = backbone.stages["fc"][1]
    assert (fc.in_features, fc.out_features) == (500, 50)
    out = backbone(torch.zeros(4, 1, 36, 36))
    assert out.shape == (4, 50)
    assert (out >= 0).all()  # ends in ReLU


def test_convnet_has_batch_norm_and_dropout():
    backbone = get_backbone("convnet", dropout=0.5)
    modules = list(backbone.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in modules) == 3
    assert [m.p for m in modules if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert backbone(torch.randn(3, 1, 36, 36)).shape == (3, backbone.out_features)


def test_registry_refuses_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="'lenet' is already registered"):
        register_backbone("lenet")(lambda: None)
    with pytest.raises(
        UnknownNameError, match="unknown backbone 'resnet999'; choose from"
    ):
        get_backbone("resnet999")
    with pytest.raises(TypeError, match="backbone_args for 'lenet'"):
        get_backbone("lenet", depth=3)
    assert {"lenet", "convnet"} <= set(BACKBONES)


def test_backbone_defaults_are_the_factory_defaults_a_yaml_file_can_set():
    assert backbone_defaults("convnet") == {
        "in_channels": 1,
        "input_size": 36,
        "widths": [16, 32, 64],
        "hidden": 128,
        "dropout": 0.3,
    }  # norm_layer is a class, not a YAML value
    assert backbone_defaults("lenet") == {
        "in_channels": 1,
        "input_size": 36,
        "hidden": 50,
    }


@pytest.mark.parametrize(
    ("small_input", "conv1", "maxpool"),
    [(True, (64, 1, 3, 3), nn.Identity), (False, (64, 1, 7, 7), nn.MaxPool2d)],
)
def test_resnet18_is_torchvisions_as_named_stages(small_input, conv1, maxpool):
    backbone = get_backbone("resnet18", small_input=small_input)
    assert backbone.stage_names == [
        "stem",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "pool",
    ]
    stem = backbone.stages["stem"]
    assert tuple(stem.conv1.weight.shape) == conv1
    assert stem.conv1.stride == ((1, 1) if small_input else (2, 2))
    assert isinstance(stem.maxpool, maxpool)
    x = torch.randn(2, 1, 36, 36)
    assert backbone(x).shape == (2, 512) and backbone.out_features == 512
    # the layers are torchvision's, names included
    reference = torchvision.models.resnet18(weights=None).state_dict()
    ours = {k.removeprefix("stages."): v for k, v in backbone.state_dict().items()}
    assert {k for k in ours if k.startswith("layer")} == {
        k for k in reference if k.startswith("layer")
    }
    assert all(
        ours[k].shape == reference[k].shape for k in ours if k.startswith("layer")
    )


def test_resnet18_takes_any_channel_count_and_shares_like_the_others():
    backbone = get_backbone("resnet18", in_channels=3, input_size=32)
    assert backbone(torch.randn(1, 3, 32, 32)).shape == (1, 512)
    tasks = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                         "right": {"kind": "multiclass", "num_classes": 10}})  # fmt: skip
    model = build_model(tasks, "resnet18", shared_stages=4)
    assert list(model.shared) == ["stem", "layer1", "layer2", "layer3"]
    assert list(model.task_stages["left"]) == ["layer4", "pool"]
    out = model(torch.randn(2, 1, 36, 36))
    assert out["left"].shape == (2, 10)
    with pytest.raises(ValueError, match="needs input_size >= 8"):
        get_backbone("resnet18", input_size=4)
