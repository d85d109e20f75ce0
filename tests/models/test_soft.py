"""Soft sharing: cross-stitch, MTAN and MMoE beside hard sharing."""

import pytest
import torch
from torch import nn

from multitask_cnn.config import ProjectParameters, parse_tasks
from multitask_cnn.models import build_model
from multitask_cnn.models.transfer import (
    TransferMapping,
    backbone_state_dict,
    transfer_weights,
)
from multitask_cnn.training import WEIGHTINGS, get_weighting
from multitask_cnn.training.strategies.base import Step

TASKS = parse_tasks({
    "left": {"kind": "multiclass", "num_classes": 10},
    "right": {"kind": "multiclass", "num_classes": 10, "head_hidden": [16]},
    "shoes": {"kind": "binary", "label": "footwear"},
    "ink": {"kind": "regression"},
})  # fmt: skip
SOFT = ["cross_stitch", "mtan", "mmoe"]


def _build(architecture, backbone="lenet", tasks=TASKS, **options):
    torch.manual_seed(0)
    return build_model(tasks, backbone, architecture=architecture,
                       architecture_args=options)  # fmt: skip


@pytest.mark.parametrize("backbone", ["lenet", "convnet"])
@pytest.mark.parametrize("architecture", SOFT)
def test_every_architecture_answers_every_task_in_its_shape(architecture, backbone):
    model = _build(architecture, backbone).eval()
    out = model(torch.randn(5, 1, 36, 36))
    assert out["left"].shape == (5, 10) and out["right"].shape == (5, 10)
    assert out["shoes"].shape == (5,) and out["ink"].shape == (5,)
    # a fused batch: each task on its own rows
    rows = {"left": slice(0, 2), "ink": slice(2, 5)}
    fused = model(torch.randn(5, 1, 36, 36), rows)
    assert set(fused) == {"left", "ink"}
    assert fused["left"].shape == (2, 10) and fused["ink"].shape == (3,)


@pytest.mark.parametrize("architecture", SOFT)
def test_shared_and_task_parameters_split_the_model(architecture):
    model = _build(architecture)
    shared = {id(p) for p in model.shared_parameters()}
    own = [{id(p) for p in model.task_parameters(t)} for t in TASKS]
    every = {id(p) for p in model.parameters()}
    assert shared and all(own)
    assert shared.union(*own) == every
    assert sum(len(o) for o in own) + len(shared) == len(every)  # disjoint
    # every task's loss reaches every shared parameter; no other task's own ones
    out = model(torch.randn(4, 1, 36, 36))
    for task, mine in zip(TASKS, own, strict=True):
        model.zero_grad()
        out[task].float().pow(2).mean().backward(retain_graph=True)
        reached = {id(p) for p in model.parameters() if p.grad is not None
                   and p.grad.abs().sum() > 0}  # fmt: skip
        assert reached <= shared | mine
        assert reached >= shared, task  # every shared parameter, through the mixing


def test_cross_stitch_at_identity_mixing_is_independent_columns():
    model = _build("cross_stitch").eval()
    with torch.no_grad():
        for alpha in model.stitches.values():
            alpha.copy_(torch.eye(len(TASKS)))
    x = torch.randn(3, 1, 36, 36)
    out = model(x)
    for task in TASKS:
        y = x
        for stage in model.task_stages[task].values():
            y = stage(y)
        alone = model.heads[task](y)
        torch.testing.assert_close(
            out[task], alone.squeeze(1) if alone.shape[1] == 1 else alone
        )


def test_cross_stitch_starts_near_identity_and_mixes_after_the_named_stages():
    model = _build(
        "cross_stitch", stitch_after="conv1"
    )  # one stage, as --params gives it
    assert list(model.stitches) == ["conv1"]
    alpha = model.stitches["conv1"].detach()
    assert torch.allclose(alpha.diagonal(), torch.full((4,), 0.9))
    assert torch.allclose(alpha.sum(1), torch.ones(4))
    # past the last stitch the columns are each task's own
    fc = model.task_stages["left"]["fc"][1].weight
    assert any(p is fc for p in model.task_parameters("left"))
    assert not any(p is fc for p in model.shared_parameters())


def test_mtan_with_all_ones_attention_is_the_shared_column():
    model = _build("mtan").eval()

    class Ones(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.channels = channels

        def forward(self, x):
            return torch.ones(len(x), self.channels, *x.shape[-2:])

    for task in TASKS:
        for stage, module in model.attention[task].items():
            model.attention[task][stage] = Ones(module.mask[3].out_channels)
    x = torch.randn(3, 1, 36, 36)
    out = model(x)
    column = x
    for stage in model.shared.values():
        column = stage(column)
    for task in TASKS:
        alone = model.heads[task](column)
        torch.testing.assert_close(
            out[task], alone.squeeze(1) if alone.shape[1] == 1 else alone
        )


def test_mmoe_gates_sum_to_one_and_mix_the_experts():
    model = _build("mmoe", experts=4, shared_bottom=1).eval()
    assert len(model.experts) == 4 and list(model.shared) == ["conv1"]
    x = torch.randn(6, 1, 36, 36)
    bottom = model.shared["conv1"](x)
    for task in TASKS:
        gate = model.gate_weights(bottom, task)
        assert gate.shape == (6, 4) and (gate > 0).all()
        torch.testing.assert_close(gate.sum(1), torch.ones(6))
    # the experts start apart, so the gates have something to choose from
    first, second = (e["fc"][1].weight for e in model.experts[:2])
    assert not torch.equal(first, second)
    model(x)["left"].pow(2).mean().backward()
    assert model.gates["left"].weight.grad.abs().max() > 1e-6


@pytest.mark.parametrize(("architecture", "copies"), [("cross_stitch", 4), ("mmoe", 3)])
def test_gradnorm_measures_every_column_or_expert(architecture, copies):
    """GradNorm's "last shared layer": one per column or expert, so that no task's own
    column stands for all."""
    model = _build(architecture)
    last = model.last_shared_layer()
    assert len(last) == 2 * copies  # weight and bias of each
    shared = {id(p) for p in model.shared_parameters()}
    assert all(id(p) in shared for p in last)


@pytest.mark.parametrize(("architecture", "options", "message"), [
    ("mmoe", {"experts": 1}, "experts=1: a whole number, at least 2"),
    ("mmoe", {"experts": True}, "experts=True: a whole number"),
    ("mmoe", {"shared_bottom": 3}, "shared_bottom=3: 0 to 2"),
    ("cross_stitch", {"stitch_after": ["conv9"]}, r"stitch_after=\['conv9'\]"),
    ("mtan", {"heads": 2}, "model.architecture_args for 'mtan'"),
])  # fmt: skip
def test_bad_options_are_refused_before_training(architecture, options, message):
    params = {"tasks": {"left": {"kind": "multiclass", "num_classes": 10}},
              "model": {"architecture": architecture, "architecture_args": options}}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        ProjectParameters.model_validate(params)


def test_hard_sharing_settings_are_refused_with_a_soft_architecture():
    base = {"tasks": {"left": {"kind": "multiclass", "num_classes": 10}}}
    with pytest.raises(
        ValueError, match="model.shared_stages=1 is hard sharing's setting"
    ):
        ProjectParameters.model_validate(
            base | {"model": {"architecture": "mtan", "shared_stages": 1}}
        )
    with pytest.raises(ValueError, match="hard sharing takes none"):
        ProjectParameters.model_validate(
            base | {"model": {"architecture_args": {"experts": 3}}}
        )
    # a gradient-level strategy has shared parameters to aggregate in every soft model
    ProjectParameters.model_validate(
        base
        | {
            "model": {"architecture": "cross_stitch"},
            "training": {"weighting": "upgrad"},
        }
    )


@pytest.mark.parametrize("architecture", SOFT)
def test_transfer_fills_every_column_and_expert_from_the_source(architecture):
    torch.manual_seed(1)
    source = backbone_state_dict(build_model(TASKS, "lenet"))
    model = _build(architecture)
    report = transfer_weights(model, source, TransferMapping())
    state = model.state_dict()
    copies = {"cross_stitch": [f"task_stages.{t}." for t in TASKS],
              "mtan": ["shared."], "mmoe": [f"experts.{i}." for i in range(3)]}  # fmt: skip
    for prefix in copies[architecture]:
        torch.testing.assert_close(state[prefix + "conv1.0.weight"],
                                   source["backbone.conv1.0.weight"])  # fmt: skip
        assert prefix + "fc.1.bias" in report.transferred
    assert not any(name.startswith(("stitches", "attention", "gates", "heads"))
                   for name in report.transferred)  # fmt: skip


@pytest.mark.parametrize("architecture", SOFT)
def test_a_gradient_strategy_aggregates_the_shared_parameters_and_leaves_the_rest_alone(
    architecture,
):
    """``mean`` (TorchJD): the shared parameters get the mean of the task gradients,
    each task's own parameters that task's gradient, through the whole network."""
    tasks = {t: s for t, s in TASKS.items() if t in ("left", "ink")}
    model = _build(architecture, tasks=tasks)
    x = torch.randn(8, 1, 36, 36)
    targets = {"left": torch.randint(0, 10, (8,)), "ink": torch.randn(8)}

    def losses():
        out = model(x)
        return {t: tasks[t].task_kind.loss(out[t], targets[t]) for t in tasks}

    shared = model.shared_parameters()
    own = [p for t in tasks for p in model.task_parameters(t)]
    expected = torch.autograd.grad(sum(losses().values()), shared + own)
    strategy = get_weighting("mean", tasks)
    model.zero_grad()
    strategy.backward(Step(losses(), None, shared, model.last_shared_layer(),
                           task_params=own))  # fmt: skip
    for p, g in zip(shared, expected[: len(shared)], strict=True):
        torch.testing.assert_close(p.grad, g / len(tasks), atol=1e-6, rtol=1e-4)
    for p, g in zip(own, expected[len(shared) :], strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_every_strategy_trains_a_cross_stitch_model(name):
    """The general path: every strategy gives every parameter a finite gradient."""
    tasks = {t: s for t, s in TASKS.items() if t in ("left", "right")}
    model = _build("cross_stitch", tasks=tasks)
    strategy = get_weighting(name, tasks)
    out = model(torch.randn(8, 1, 36, 36))
    y = torch.randint(0, 10, (8,))
    losses = {t: nn.functional.cross_entropy(out[t], y) for t in tasks}
    own = [p for t in tasks for p in model.task_parameters(t)]
    weights = strategy.backward(Step(losses, None, model.shared_parameters(),
                                     model.last_shared_layer(), task_params=own))  # fmt: skip
    assert weights.shape == (2,)
    for parameter in model.parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()
