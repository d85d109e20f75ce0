import json
import pickle

import pytest
import torch
import torchvision

from multitask_cnn.config import parse_tasks
from multitask_cnn.models import build_model, get_backbone
from multitask_cnn.models.transfer import (
    Rename,
    TransferError,
    TransferMapping,
    backbone_name,
    backbone_state_dict,
    load_state_dict_file,
    state_dict_of,
    transfer_weights,
)

TASKS = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                     "right": {"kind": "multiclass", "num_classes": 10}})  # fmt: skip
TORCHVISION_RENAMES = (
    "conv1.* -> backbone.stem.conv1.*",
    "bn1.* -> backbone.stem.bn1.*",
    "layer* -> backbone.layer*",
)


def _pretrained(backbone: str = "lenet", **args) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    return backbone_state_dict(get_backbone(backbone, **args))


def _model(shared_stages=None, backbone="lenet", **args):
    torch.manual_seed(0)
    return build_model(TASKS, backbone, backbone_args=args, shared_stages=shared_stages)


def test_backbone_names_cover_shared_and_per_task_stages():
    assert backbone_name("shared.conv1.0.weight") == "backbone.conv1.0.weight"
    assert backbone_name("task_stages.left.fc.1.bias") == "backbone.fc.1.bias"
    assert backbone_name("heads.left.0.weight") is None
    source = _pretrained()
    assert set(source) == {f"backbone.{s}.{p}" for s, p in (
        ("conv1", "0.weight"), ("conv1", "0.bias"), ("conv2", "0.weight"),
        ("conv2", "0.bias"), ("fc", "1.weight"), ("fc", "1.bias"))}  # fmt: skip


def test_default_mapping_fills_shared_stages_and_every_tasks_copy_from_one_source():
    source = _pretrained()
    model = _model(shared_stages=1)
    heads_before = model.heads["left"][0].weight.detach().clone()
    report = transfer_weights(model, source, TransferMapping())

    state = model.state_dict()
    assert torch.equal(
        state["shared.conv1.0.weight"], source["backbone.conv1.0.weight"]
    )
    for task in ("left", "right"):  # per-task copies, filled from the same tensor
        assert torch.equal(state[f"task_stages.{task}.conv2.0.weight"],
                           source["backbone.conv2.0.weight"])  # fmt: skip
        assert torch.equal(
            state[f"task_stages.{task}.fc.1.bias"], source["backbone.fc.1.bias"]
        )
    assert torch.equal(
        model.heads["left"][0].weight, heads_before
    )  # heads keep their init

    entries = {e["target"]: e for e in report.entries}
    assert entries["task_stages.right.conv2.0.weight"] == {
        "target": "task_stages.right.conv2.0.weight", "shape": [20, 10, 5, 5],
        "numel": 5000, "source": "backbone.conv2.0.weight", "status": "transferred",
    }  # fmt: skip
    assert entries["heads.left.0.weight"]["status"] == "skipped"
    assert entries["heads.left.0.weight"]["reason"] == "no source tensor"
    names = {n for n, _ in model.named_parameters()}
    counts = report.counts(names)
    assert counts["tensors_transferred"] == 10 and counts["tensors_skipped"] == 4
    assert counts["parameters_transferred"] == 820 + 5020 * 2 + 25050 * 2
    assert counts["parameters_total"] == sum(p.numel() for p in model.parameters())
    json.dumps(report.to_dict(names))  # JSON-able as it is


def test_include_exclude_and_renames():
    source = {k.replace("backbone.", "net."): v for k, v in _pretrained().items()}
    model = _model()
    mapping = TransferMapping.from_config(
        include=["backbone.conv*"], exclude=["*.bias"], renames=["net.* -> backbone.*"]
    )
    report = transfer_weights(model, source, mapping)
    status = {e["target"]: (e["status"], e.get("reason")) for e in report.entries}
    assert status["shared.conv1.0.weight"] == ("transferred", None)
    assert status["shared.conv2.0.weight"] == ("transferred", None)
    assert status["shared.conv1.0.bias"] == ("skipped", "excluded by '*.bias'")
    assert status["shared.fc.1.weight"] == ("skipped", "matches no include pattern")
    assert report.unused_sources == ["net.conv1.0.bias", "net.conv2.0.bias",
                                     "net.fc.1.weight", "net.fc.1.bias"]  # fmt: skip
    assert report.mapping["renames"] == ["net.* -> backbone.*"]


def test_rename_templates_carry_each_star_in_order():
    rename = Rename.parse("a.*.x.* -> b.*.y.*")
    assert rename.apply("a.1.x.w") == "b.1.y.w"
    assert rename.apply("c.1.x.w") is None
    with pytest.raises(ValueError, match="source has 1 '\\*' and the target 0"):
        Rename.parse("a.* -> b")
    with pytest.raises(ValueError, match="not of the form"):
        Rename.parse("a.*")


def test_a_pattern_that_matches_nothing_is_an_error():
    source, model = _pretrained(), _model()
    with pytest.raises(
        TransferError, match="include pattern 'backbone.conv9.*' matches no tensor"
    ):
        transfer_weights(model, source, TransferMapping(include=("backbone.conv9.*",)))
    with pytest.raises(TransferError, match="exclude pattern 'nope' matches no tensor"):
        transfer_weights(model, source, TransferMapping(exclude=("nope",)))
    with pytest.raises(
        TransferError, match="rename 'conv1.\\* -> x.\\*' matches no source"
    ):
        transfer_weights(
            model, source, TransferMapping(renames=(Rename("conv1.*", "x.*"),))
        )


def test_shapes_are_checked_skipped_when_implicit_an_error_when_asked_for():
    source = _pretrained(hidden=40)  # fc is 500 -> 40; the model's is 500 -> 50
    model = _model()
    before = model.state_dict()["shared.fc.1.weight"].clone()
    report = transfer_weights(model, source, TransferMapping())
    entry = next(e for e in report.entries if e["target"] == "shared.fc.1.weight")
    assert entry["status"] == "skipped"
    assert entry["reason"] == (
        "shape mismatch: target (50, 500), source 'backbone.fc.1.weight' (40, 500)"
    )
    assert torch.equal(model.state_dict()["shared.fc.1.weight"], before)

    with pytest.raises(TransferError) as error:  # asked for by name: an error
        transfer_weights(_model(), source, TransferMapping(include=("backbone.fc.*",)))
    message = str(error.value)
    assert "'shared.fc.1.weight' has shape (50, 500)" in message
    assert (
        "'backbone.fc.1.weight' (asked for by include 'backbone.fc.*') has shape (40, 500)"
        in message
    )


def test_nothing_transferable_is_an_error():
    source = _pretrained("convnet")
    with pytest.raises(TransferError, match="nothing transferable"):
        transfer_weights(_model(), source, TransferMapping())


@pytest.mark.parametrize("how", ["sum", "mean"])
def test_an_rgb_first_convolution_is_adapted_to_one_channel(how):
    source = _pretrained("lenet", in_channels=3)
    model = _model()
    report = transfer_weights(model, source, TransferMapping(channel_adapt=how))
    rgb = source["backbone.conv1.0.weight"]  # (10, 3, 9, 9)
    expected = rgb.sum(1, keepdim=True) if how == "sum" else rgb.mean(1, keepdim=True)
    assert torch.allclose(model.state_dict()["shared.conv1.0.weight"], expected)
    entry = next(e for e in report.entries if e["target"] == "shared.conv1.0.weight")
    assert entry["adapted"] == f"{how} of 3 input channels (10, 3, 9, 9)"
    assert report.counts(set())["tensors_adapted"] == 1
    # a grey image x gives the same response as the RGB kernels on (x, x, x) under sum
    x = torch.randn(2, 1, 36, 36)
    conv = torch.nn.functional.conv2d
    if how == "sum":
        assert torch.allclose(
            conv(x, expected), conv(x.repeat(1, 3, 1, 1), rgb), atol=1e-4
        )


def test_torchvision_resnet18_weights_transfer_with_renames(tmp_path):
    torch.manual_seed(0)
    weights = torchvision.models.resnet18(
        weights=None
    ).state_dict()  # RGB, ImageNet shapes
    path = tmp_path / "resnet18.pt"
    torch.save(weights, path)
    model = _model(shared_stages=3, backbone="resnet18", small_input=False)
    report = transfer_weights(model, load_state_dict_file(path),
                              TransferMapping.from_config(renames=TORCHVISION_RENAMES))  # fmt: skip
    state = model.state_dict()
    assert torch.allclose(state["shared.stem.conv1.weight"],
                          weights["conv1.weight"].sum(1, keepdim=True))  # fmt: skip
    assert torch.equal(state["shared.layer2.0.downsample.0.weight"],
                       weights["layer2.0.downsample.0.weight"])  # fmt: skip
    for task in ("left", "right"):  # layer3 onwards per task
        assert torch.equal(state[f"task_stages.{task}.layer4.1.bn2.running_var"],
                           weights["layer4.1.bn2.running_var"])  # fmt: skip
    assert report.unused_sources == ["fc.weight", "fc.bias"]
    skipped = {e["target"] for e in report.entries if e["status"] == "skipped"}
    assert skipped == {
        f"heads.{t}.0.{p}" for t in ("left", "right") for p in ("weight", "bias")
    }

    # the small-input stem's 3x3 conv has no 7x7 source: skipped when the names meet
    # by default, an error (both shapes) when a rename asked for it
    small = _model(backbone="resnet18")
    renamed = {}
    for name, tensor in weights.items():
        for rename in map(Rename.parse, TORCHVISION_RENAMES):
            name = rename.apply(name) or name
        renamed[name] = tensor
    report = transfer_weights(small, renamed, TransferMapping())
    entry = next(e for e in report.entries if e["target"] == "shared.stem.conv1.weight")
    assert entry["status"] == "skipped"
    assert entry["reason"] == (
        "shape mismatch: target (64, 1, 3, 3), source 'backbone.stem.conv1.weight' (64, 3, 7, 7)"
    )
    with pytest.raises(TransferError, match=r"\(64, 1, 3, 3\).*\(64, 3, 7, 7\)"):
        transfer_weights(
            small, weights, TransferMapping.from_config(renames=TORCHVISION_RENAMES)
        )


def test_files_that_are_not_checkpoints_are_named(tmp_path):
    with pytest.raises(TransferError, match="missing.pt' does not exist"):
        load_state_dict_file(tmp_path / "missing.pt")
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(TransferError, match="notes.pt is not a file torch.save wrote"):
        load_state_dict_file(text)
    code = tmp_path / "code.pt"  # a pickle that would run code: refused by weights_only
    code.write_bytes(pickle.dumps(print, protocol=2))
    with pytest.raises(TransferError, match="code.pt holds Python objects other than"):
        load_state_dict_file(code)
    numbers = tmp_path / "numbers.pt"
    torch.save({"epoch": 3, "lr": 0.1}, numbers)
    with pytest.raises(
        TransferError, match="numbers.pt' is not a checkpoint: expected a state_dict"
    ):
        load_state_dict_file(numbers)
    wrapped = tmp_path / "wrapped.pt"  # a dict holding the state_dict is fine
    torch.save({"epoch": 3, "state_dict": {"w": torch.ones(2)}}, wrapped)
    assert set(load_state_dict_file(wrapped)) == {"w"}
    assert set(state_dict_of({"model": {"w": torch.ones(1)}}, "x")) == {"w"}
