"""Starting from transferred weights: loading, freezing, the learning-rate scale."""

import pytest
import torch

from multitask_cnn.config import TrainingConfig, parse_tasks
from multitask_cnn.models import build_model, get_backbone
from multitask_cnn.models.transfer import (
    TransferMapping,
    backbone_state_dict,
    transfer_weights,
)
from multitask_cnn.training import WarmStart, train_model

CPU = torch.device("cpu")
TASKS = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                     "right": {"kind": "multiclass", "num_classes": 10}})  # fmt: skip
LABELS = {"left": "left", "right": "right"}


def _budget(epochs=2, **changes):
    return TrainingConfig(epochs=epochs, batch_size=128, seed=1,
                          early_stopping={"patience": 10}, **changes).budget()  # fmt: skip


def _warm_start(shared_stages=None, **kwargs) -> WarmStart:
    torch.manual_seed(5)
    source = backbone_state_dict(get_backbone("lenet"))
    model = build_model(TASKS, "lenet", shared_stages=shared_stages)
    report = transfer_weights(
        model, source, TransferMapping(include=("backbone.conv*",))
    )
    names = {n for n, _ in model.named_parameters()} & set(report.transferred)
    return WarmStart(model.state_dict(), frozenset(names), **kwargs)


def _train(
    mf_splits, warm_start, epochs=2, weighting="equal", shared_stages=None, **budget
):
    train, val, _ = mf_splits(LABELS)
    seen = {}

    def build():
        seen["model"] = build_model(TASKS, "lenet", shared_stages=shared_stages)
        return seen["model"]

    snapshots = {}

    def snapshot(epoch, record):
        snapshots[epoch] = {
            k: v.detach().clone() for k, v in seen["model"].named_parameters()
        }

    state = train_model(build, TASKS, train, val, CPU, _budget(epochs, **budget),
                        weighting=weighting, on_epoch_end=snapshot, warm_start=warm_start)  # fmt: skip
    return state, snapshots


def test_transferred_weights_are_loaded_and_frozen_for_the_first_epochs(mf_splits):
    warm = _warm_start(freeze_epochs=1)
    assert warm.transferred == {"shared.conv1.0.weight", "shared.conv1.0.bias",
                                "shared.conv2.0.weight", "shared.conv2.0.bias"}  # fmt: skip
    state, snapshots = _train(mf_splits, warm)
    for name in warm.transferred:  # frozen in epoch 1, trained in epoch 2
        assert torch.equal(snapshots[1][name], warm.state[name]), name
        assert not torch.equal(snapshots[2][name], snapshots[1][name]), name
    for name in ("shared.fc.1.weight", "heads.left.0.weight"):  # trained throughout
        assert not torch.equal(snapshots[1][name], warm.state[name])
    frozen = 10 * 81 + 10 + 20 * 10 * 25 + 20
    assert [r["transfer.frozen_parameters"] for r in state.history] == [frozen, 0]
    assert all(p.requires_grad for p in state.model.parameters())  # released at the end


def test_without_freezing_the_transferred_weights_train_from_the_first_epoch(
    mf_splits,
):
    warm = _warm_start()
    state, snapshots = _train(mf_splits, warm, epochs=1)
    assert not torch.equal(
        snapshots[1]["shared.conv1.0.weight"], warm.state["shared.conv1.0.weight"]
    )
    assert "transfer.frozen_parameters" not in state.history[0]


def test_the_transferred_parameters_train_at_a_scaled_learning_rate(mf_splits):
    warm = _warm_start(lr_scale=0.1)
    state, _ = _train(mf_splits, warm, epochs=1, lr=0.002)
    groups = state.optimizer.param_groups
    assert [g["lr"] for g in groups] == [pytest.approx(0.002), pytest.approx(0.0002)]
    named = dict(state.model.named_parameters())
    assert {id(p) for p in groups[1]["params"]} == {
        id(named[n]) for n in warm.transferred
    }
    assert len(groups[0]["params"]) == len(named) - len(warm.transferred)


@pytest.mark.parametrize("weighting", ["upgrad", "gradnorm"])
def test_gradient_level_strategies_train_while_every_shared_parameter_is_frozen(
    mf_splits, weighting
):
    torch.manual_seed(5)
    model = build_model(TASKS, "lenet", shared_stages=2)
    report = transfer_weights(
        model, backbone_state_dict(get_backbone("lenet")), TransferMapping()
    )
    names = {n for n, _ in model.named_parameters()} & set(report.transferred)
    warm = WarmStart(model.state_dict(), frozenset(names), freeze_epochs=1)
    state, snapshots = _train(mf_splits, warm, weighting=weighting, shared_stages=2)
    assert torch.equal(
        snapshots[1]["shared.conv2.0.weight"], warm.state["shared.conv2.0.weight"]
    )
    assert not torch.equal(
        snapshots[1]["heads.left.0.weight"], warm.state["heads.left.0.weight"]
    )
    assert not torch.equal(
        snapshots[2]["shared.conv2.0.weight"], snapshots[1]["shared.conv2.0.weight"]
    )


def test_a_state_for_another_model_is_refused_naming_what_differs(mf_splits):
    warm = _warm_start(shared_stages=1)  # per-task conv2/fc: other tensor names
    with pytest.raises(
        ValueError, match="does not fit the model being trained.*missing"
    ):
        _train(mf_splits, warm, epochs=1)


def test_freezing_every_parameter_is_refused_before_training(mf_splits):
    torch.manual_seed(5)
    model = build_model(TASKS, "lenet")
    every = frozenset(n for n, _ in model.named_parameters())
    warm = WarmStart(model.state_dict(), every, freeze_epochs=1)
    with pytest.raises(ValueError, match="would freeze every parameter.*'heads.\\*'"):
        _train(mf_splits, warm, epochs=1)


def test_a_gradient_level_strategy_on_a_model_sharing_nothing_is_still_an_error(
    mf_splits,
):
    with pytest.raises(ValueError, match="shares none"):
        _train(mf_splits, None, epochs=1, weighting="upgrad", shared_stages=0)
