import pytest
import torch
from torch import nn

from multitask_cnn.models import (
    BACKBONES,
    backbone_defaults,
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
