"""Each strategy's defining property on a tiny problem, and the common contract."""

import copy
import io
import math

import pytest
import torch
from torch import nn

from multitask_cnn.config import parse_tasks
from multitask_cnn.models import build_model
from multitask_cnn.registry import UnknownNameError
from multitask_cnn.training import WEIGHTINGS, get_weighting
from multitask_cnn.training.strategies import Step
from multitask_cnn.training.strategies.base import LossStrategy

TASKS = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                     "right": {"kind": "multiclass", "num_classes": 10, "loss_weight": 3}})  # fmt: skip
NO_WEIGHTS = {"graddrop", "config"}  # they combine gradients without task weights


def _step(losses, features=None, shared=()):
    features = features if features is not None else torch.zeros(1, requires_grad=True)
    shared = list(shared)
    return Step(dict(zip(TASKS, losses, strict=True)), features, shared, shared)


def _loss_values(*values):
    """Scalar losses as leaves, so their .grad shows the weight each got."""
    return [torch.tensor(float(v), requires_grad=True) for v in values]


def test_equal_is_the_plain_sum_and_static_uses_loss_weight():
    for name, expected in (("equal", [1.0, 1.0]), ("static", [1.0, 3.0])):
        losses = _loss_values(1.0, 2.0)
        weights = get_weighting(name, TASKS).backward(_step(losses))
        assert weights.tolist() == expected
        assert [loss.grad.item() for loss in losses] == expected


def test_uncertainty_gives_the_noisier_task_the_lower_weight():
    strategy = get_weighting("uncertainty", TASKS)
    optimizer = torch.optim.SGD(strategy.parameters(), lr=0.1)
    for _ in range(300):  # task `right` keeps a loss 4x larger: it is the noisier one
        optimizer.zero_grad()
        weights = strategy.backward(_step(_loss_values(0.5, 2.0)))
        optimizer.step()
    assert weights[1] < weights[0]
    log_var = strategy.parameters()[0].detach()
    torch.testing.assert_close(
        log_var, torch.log(torch.tensor([0.5, 2.0])), atol=0.02, rtol=0
    )


def test_dwa_weights_sum_to_the_number_of_tasks_and_favour_the_slower_task():
    strategy = get_weighting("dwa", TASKS)
    for left, right in ((1.0, 1.0), (0.5, 0.9)):  # `left` falls fast, `right` slowly
        strategy.backward(_step(_loss_values(left, right)))
        strategy.on_epoch_end(1)
    weights = strategy.backward(_step(_loss_values(0.4, 0.8)))
    assert weights.sum().item() == pytest.approx(2.0)
    assert weights[1] > weights[0]


def test_famo_moves_weight_to_the_task_whose_loss_fell_less():
    strategy = get_weighting("famo", TASKS, lr=0.5)
    first = strategy.backward(_step(_loss_values(1.0, 1.0)))
    strategy.after_step(dict(zip(TASKS, torch.tensor([0.5, 0.99]), strict=True)))
    second = strategy.backward(_step(_loss_values(1.0, 1.0)))
    assert first[0] == pytest.approx(first[1])
    assert second[1] > second[0]


def test_rlw_draws_positive_weights_summing_to_one_from_the_seeded_rng():
    strategy = get_weighting("rlw", TASKS)
    torch.manual_seed(0)
    a = strategy.backward(_step(_loss_values(1.0, 1.0)))
    torch.manual_seed(0)
    b = strategy.backward(_step(_loss_values(1.0, 1.0)))
    assert (a > 0).all() and a.sum().item() == pytest.approx(1.0) and torch.equal(a, b)


def _two_task_net():
    torch.manual_seed(0)
    shared = nn.Linear(4, 3)
    heads = nn.Linear(3, 1), nn.Linear(3, 1)
    x = torch.randn(16, 4)
    features = shared(x)
    # opposite targets: the tasks pull the shared layer in conflicting directions
    losses = [
        ((h(features).squeeze(1) - t) ** 2).mean()
        for h, t in zip(heads, (1.0, -1.0), strict=True)
    ]
    return shared, features, losses


def _task_gradients():
    shared, _, losses = _two_task_net()
    params = list(shared.parameters())
    return [torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)])
            for loss in losses]  # fmt: skip


def test_gradient_strategies_aggregate_shared_gradients_and_leave_heads_their_own():
    torch.manual_seed(0)
    shared, heads = nn.Linear(4, 3), (nn.Linear(3, 1), nn.Linear(3, 1))
    x = torch.randn(16, 4)
    features = shared(x)
    losses = [
        ((h(features).squeeze(1) - t) ** 2).mean()
        for h, t in zip(heads, (1.0, -1.0), strict=True)
    ]
    own = [torch.autograd.grad(loss, list(h.parameters()), retain_graph=True)
           for loss, h in zip(losses, heads, strict=True)]  # fmt: skip
    weights = get_weighting("upgrad", TASKS).backward(
        _step(losses, features, shared.parameters())
    )
    assert weights.shape == (2,) and (weights > 0).all()
    assert all(p.grad is not None for p in shared.parameters())
    for head, grads in zip(
        heads, own, strict=True
    ):  # each head: its own task's plain gradient
        for p, g in zip(head.parameters(), grads, strict=True):
            torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize("name", ["upgrad", "pcgrad", "mgda", "dualproj"])
def test_conflict_averse_updates_never_oppose_a_task(name):
    g1, g2 = _task_gradients()
    assert g1 @ g2 < 0  # the tasks conflict
    shared, features, losses = _two_task_net()
    get_weighting(name, TASKS).backward(_step(losses, features, shared.parameters()))
    update = torch.cat([p.grad.flatten() for p in shared.parameters()])
    for g in (
        g1,
        g2,
    ):  # >= 0 up to the QP solvers' tolerance (the mean gets -0.07 here)
        assert update @ g / (update.norm() * g.norm()) >= -1e-3


def test_the_plain_mean_does_oppose_a_task_here():  # the property above can fail
    g1, g2 = _task_gradients()
    shared, features, losses = _two_task_net()
    get_weighting("mean", TASKS).backward(_step(losses, features, shared.parameters()))
    update = torch.cat([p.grad.flatten() for p in shared.parameters()])
    assert min(update @ g1 / g1.norm(), update @ g2 / g2.norm()) / update.norm() < -0.01


def test_gradnorm_keeps_weights_summing_to_the_number_of_tasks_and_lifts_the_lagging_task():
    shared, features, _ = _two_task_net()
    strategy = get_weighting("gradnorm", TASKS, alpha=1.5)
    optimizer = torch.optim.SGD(strategy.parameters(), lr=0.05)
    for scale in (
        1.0,
        0.9,
        0.8,
        0.7,
    ):  # `left` trains (its loss falls), `right` does not
        shared, features, losses = _two_task_net()
        losses = [losses[0] * scale, losses[1]]
        optimizer.zero_grad()
        strategy.backward(_step(losses, features, shared.parameters()))
        optimizer.step()
        strategy.after_optimizer_step()
    weights = strategy.parameters()[0].detach()
    assert weights.sum().item() == pytest.approx(2.0)
    assert weights[1] > weights[0]


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_every_strategy_trains_a_step_and_round_trips_its_state(name):
    model = build_model(TASKS, "lenet")
    strategy = get_weighting(name, TASKS)
    optimizer = torch.optim.SGD([*model.parameters(), *strategy.parameters()], lr=0.01)
    x, y = torch.randn(8, 1, 36, 36), torch.randint(0, 10, (8,))
    features = model.shared_features(x)
    outputs = model.task_outputs(features)
    losses = {t: nn.functional.cross_entropy(outputs[t], y) for t in TASKS}
    shared = list(model.shared.parameters())
    weights = strategy.backward(
        Step(losses, features, shared, model.last_shared_layer())
    )
    optimizer.step()
    strategy.after_optimizer_step()
    strategy.after_step({t: v.detach() for t, v in losses.items()})
    strategy.on_epoch_end(1)
    assert weights.shape == (2,)
    assert all(math.isnan(w) for w in weights.tolist()) == (name in NO_WEIGHTS)
    assert all(p.grad is not None for p in model.heads.parameters())
    again = get_weighting(name, TASKS)
    again.load_state_dict(strategy.state_dict())
    assert _flat(again.state_dict()) == _flat(strategy.state_dict())
    features = model.shared_features(x)  # and it trains on after loading
    outputs = model.task_outputs(features)
    losses = {t: nn.functional.cross_entropy(outputs[t], y) for t in TASKS}
    again.backward(Step(losses, features, shared, model.last_shared_layer()))


def _flat(state, prefix=""):
    """A state dict as {path: plain value}, tensors as lists (NaN-safe), for equality."""
    if isinstance(state, dict):
        return {
            k: v
            for key, value in state.items()
            for k, v in _flat(value, f"{prefix}{key}.").items()
        }
    if isinstance(state, list | tuple):
        return {
            k: v
            for i, value in enumerate(state)
            for k, v in _flat(value, f"{prefix}{i}.").items()
        }
    if isinstance(state, torch.Tensor):
        return {prefix: torch.nan_to_num(state.float(), nan=-7.0).tolist()}
    return {prefix: state}


@pytest.mark.parametrize(
    "name", ["uncertainty", "dwa", "famo", "gradnorm", "rlw", "upgrad"]
)
def test_a_task_without_labels_in_the_batch_does_not_distort_the_weights(name):
    shared, features, losses = _two_task_net()
    strategy = get_weighting(name, TASKS)
    strategy.backward(Step(dict(zip(TASKS, losses, strict=True)), features, list(shared.parameters()),
                           list(shared.parameters())))  # fmt: skip
    shared, features, losses = _two_task_net()
    unlabelled = [
        losses[0],
        losses[1] * 0,
    ]  # `right` has no labelled row: its loss is 0
    counts = {"left": torch.tensor(16), "right": torch.tensor(0)}
    weights = strategy.backward(Step(dict(zip(TASKS, unlabelled, strict=True)), features,
                                     list(shared.parameters()), list(shared.parameters()), counts))  # fmt: skip
    assert torch.isfinite(weights).all()
    assert weights[0] > 0.1 * weights.abs().max()  # the labelled task is not starved


def test_learnable_strategy_parameters_join_the_optimizer_but_famo_keeps_its_own():
    assert len(get_weighting("uncertainty", TASKS).parameters()) == 1
    assert len(get_weighting("gradnorm", TASKS).parameters()) == 1
    assert get_weighting("famo", TASKS).parameters() == []  # its own Adam steps them


def test_unknown_names_and_options_say_what_is_valid():
    with pytest.raises(
        UnknownNameError,
        match=r"unknown weighting 'magic'; choose from \['aligned_mtl'",
    ):
        get_weighting("magic", TASKS)
    with pytest.raises(TypeError, match="training.weighting_args for 'dwa'.*'tau'"):
        get_weighting("dwa", TASKS, tau=2)


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_a_restored_strategy_goes_on_exactly_as_the_saved_one(name):
    """Resuming from a train state: the strategy's state (TorchJD's Nash-MTL, GradVac
    and ExcessMTL state, the last labelled losses) survives torch.save and a
    weights_only load, and the next steps give the same weights and gradients."""
    torch.manual_seed(0)
    model = build_model(TASKS, "lenet")
    x, y = torch.randn(8, 1, 36, 36), torch.randint(0, 10, (8,))
    # ExcessMTL past its warm-up; Nash-MTL reusing its weights every other step
    options = {"excess_mtl": {"n_warmup_steps": 2},
               "nash_mtl": {"update_weights_every": 2}}.get(name, {})  # fmt: skip

    def step(model, strategy, labelled):
        model.zero_grad()
        features = model.shared_features(x)
        outputs = model.task_outputs(features)
        losses = {t: nn.functional.cross_entropy(outputs[t], y) for t in TASKS}
        weights = strategy.backward(Step(
            losses, features, list(model.shared.parameters()),
            model.last_shared_layer(), labelled=labelled,
        ))  # fmt: skip
        strategy.after_optimizer_step()
        strategy.after_step({t: v.detach() for t, v in losses.items()})
        with torch.no_grad():  # a plain SGD step, the same for both
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.05 * p.grad
        return weights, [p.grad.clone() for p in model.shared.parameters()]

    only_left = {"left": torch.tensor(8), "right": torch.tensor(0)}
    strategy = get_weighting(name, TASKS, **options)
    for labelled in (None, only_left, None):  # Nash-MTL resumes on a reuse step
        step(model, strategy, labelled)
    strategy.on_epoch_end(1)
    buffer = io.BytesIO()
    torch.save(strategy.state_dict(), buffer)
    buffer.seek(0)
    restored = get_weighting(name, TASKS, **options)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    if isinstance(strategy, LossStrategy):  # the last labelled losses, for fusion
        torch.testing.assert_close(restored._last_values, strategy._last_values)
    twin = copy.deepcopy(model)
    for seed, labelled in enumerate((only_left, None, None)):
        torch.manual_seed(seed)  # RLW, GradDrop draw: the same draws for both
        weights, grads = step(model, strategy, labelled)
        torch.manual_seed(seed)
        again, again_grads = step(twin, restored, labelled)
        torch.testing.assert_close(again, weights, equal_nan=True)
        for g, h in zip(grads, again_grads, strict=True):
            torch.testing.assert_close(h, g)


def test_a_fresh_strategy_differs_where_state_matters():
    """The check above can fail: Nash-MTL without its state gives other weights."""
    torch.manual_seed(0)
    shared, features, losses = _two_task_net()
    kept = get_weighting("nash_mtl", TASKS)
    for scale in (1.0, 3.0, 0.2):
        shared, features, losses = _two_task_net()
        kept.backward(
            _step([losses[0] * scale, losses[1]], features, shared.parameters())
        )
    fresh = get_weighting("nash_mtl", TASKS)
    shared, features, losses = _two_task_net()
    w_kept = kept.backward(_step(losses, features, shared.parameters()))
    shared, features, losses = _two_task_net()
    w_fresh = fresh.backward(_step(losses, features, shared.parameters()))
    assert not torch.allclose(w_kept, w_fresh)
