import copy
import dataclasses
import io
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from multitask_cnn.config import parse_tasks
from multitask_cnn.io import TorchDataset
from multitask_cnn.models import build_model
from multitask_cnn.tasks import kinds_of
from multitask_cnn.training import (
    InMemorySource,
    NonFiniteLossError,
    Split,
    TrainState,
    build_optimizer,
    evaluate,
    fit,
    get_weighting,
    train_one_epoch,
)
from multitask_cnn.training.state import FORMAT_VERSION

CPU = torch.device("cpu")
TASKS = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                     "right": {"kind": "multiclass", "num_classes": 10, "loss_weight": 3.0}})  # fmt: skip
KINDS = kinds_of(TASKS)
LABELS = {"left": "left", "right": "right"}


def _splits(mf_splits):
    return mf_splits(LABELS)[:2]


def _state(
    seed=0, lr=3e-3, weighting="equal", optimizer="adam", tasks=TASKS, **model_args
):
    torch.manual_seed(seed)
    model = build_model(tasks, "lenet", **model_args)
    return TrainState(model, build_optimizer(optimizer, model.parameters(), lr=lr),
                      get_weighting(weighting, tasks))  # fmt: skip


def _fit(
    mf_splits, state=None, epochs=3, patience=5, callback=None, prefix="", **kwargs
):
    train, val = _splits(mf_splits)
    state = state or _state(**kwargs)
    source = InMemorySource(train, 64, seed=1)
    fit(state, source, InMemorySource(val, 256), KINDS, CPU, epochs=epochs,
        patience=patience, prefix=prefix, on_epoch_end=callback)  # fmt: skip
    return state, val, source


def test_in_memory_source_covers_every_row_once_and_resumes_its_order(mf_splits):
    train, _ = _splits(mf_splits)
    source = InMemorySource(train, 64, seed=0)
    seen = torch.cat([b.labels["left"] for b in source])
    assert len(source) == -(-len(train) // 64) and len(seen) == len(train)
    assert sorted(seen.tolist()) == sorted(train.labels["left"].tolist())
    saved = source.state_dict()
    first = [b.labels["left"] for b in source]
    source.load_state_dict(saved)
    again = [b.labels["left"] for b in source]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(torch.cat(first), seen)  # a new order every pass
    plain = [b.labels["left"] for b in InMemorySource(train, 500)]
    assert torch.equal(torch.cat(plain), train.labels["left"])  # no seed: in order


def test_uint8_images_are_normalised_as_they_are_read(mf_splits):
    train, _ = _splits(mf_splits)
    assert train.images.dtype == torch.uint8 and train.image_shape == (1, 36, 36)
    expected = (train.images.double() / 255.0 - train.mean) / train.std
    batches = list(InMemorySource(train, 500))
    assert all(b.images.dtype == torch.float32 for b in batches)
    torch.testing.assert_close(torch.cat([b.images for b in batches]), expected.float())
    assert batches[0].rows == {"left": slice(None), "right": slice(None)}
    rows = torch.tensor([7, 2, 850, 2])  # a shuffled batch's index: images follow it
    picked = train.batch(rows)
    torch.testing.assert_close(picked.images, expected[rows].float())
    assert torch.equal(picked.labels["left"], train.labels["left"][rows])
    # whole-dataset normalisation: near zero mean and unit std on the train split
    assert abs(expected.mean()) < 1e-6 and abs(expected.std() - 1) < 1e-3
    already = Split(expected.float(), train.labels)  # float input: already normalised
    torch.testing.assert_close(already.images_at(slice(0, 10)), expected[:10].float())


def test_fit_learns_real_data_and_leaves_the_best_weights_in_the_model(mf_splits):
    records = []
    state, val, _ = _fit(
        mf_splits, epochs=4, callback=lambda e, r: records.append((e, r))
    )
    history = state.history
    assert [e for e, _ in records] == [1, 2, 3, 4] == [h["epoch"] for h in history]
    assert history[-1]["train.loss"] < history[0]["train.loss"]
    best = min(history, key=lambda h: h["val.loss"])
    assert state.best_epoch == best["epoch"]
    again = evaluate(state.model, InMemorySource(val, 256), KINDS, CPU)
    assert again["loss"] == pytest.approx(best["val.loss"], abs=1e-6)
    assert (
        again["left.accuracy"] > 0.2 and again["right.accuracy"] > 0.2
    )  # chance is 0.1
    assert {
        "weight.left",
        "weight.right",
        "val.left.accuracy",
        "train.right.loss",
    } <= set(history[0])


def test_the_model_holds_the_best_epoch_even_when_later_epochs_are_worse(mf_splits):
    # a huge learning rate makes val.loss worse after the first epoch
    state, val, _ = _fit(mf_splits, epochs=10, patience=2, lr=5.0)
    assert state.stopped_early and state.best_epoch < len(state.history)
    assert len(state.history) == state.best_epoch + 2
    again = evaluate(state.model, InMemorySource(val, 256), KINDS, CPU)
    assert again["loss"] == pytest.approx(
        state.history[state.best_epoch - 1]["val.loss"], abs=1e-5
    )
    assert again["loss"] < state.history[-1]["val.loss"]


def test_epoch_losses_average_over_labelled_rows_and_loss_is_their_sum(mf_splits):
    train, _ = _splits(mf_splits)
    left = train.labels["left"].clone()
    left[::3] = -1  # a third of the rows have no `left` label
    split = dataclasses.replace(
        train, labels={"left": left, "right": train.labels["right"]}
    )
    state = _state()
    metrics = evaluate(state.model, InMemorySource(split, 100), KINDS, CPU)
    with torch.no_grad():
        out = state.model(split.images_at(slice(None)))
    labelled = left >= 0
    expected_left = F.cross_entropy(out["left"][labelled], left[labelled]).item()
    assert metrics["left.loss"] == pytest.approx(expected_left, rel=1e-5)
    assert metrics["loss"] == pytest.approx(
        metrics["left.loss"] + metrics["right.loss"]
    )
    accuracy = (out["left"].argmax(1)[labelled] == left[labelled]).float().mean().item()
    assert metrics["left.accuracy"] == pytest.approx(accuracy)
    trained = train_one_epoch(state.model, InMemorySource(split, 100), KINDS, state.strategy,
                              state.optimizer, CPU)  # fmt: skip
    assert set(trained) == {
        "loss",
        "left.loss",
        "right.loss",
        "weight.left",
        "weight.right",
    }
    assert trained["weight.left"] == trained["weight.right"] == 1.0  # equal
    assert trained["loss"] == pytest.approx(
        trained["left.loss"] + trained["right.loss"]
    )


def test_a_non_finite_loss_stops_training_naming_task_epoch_and_step(mf_splits):
    tasks = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                         "ink": {"kind": "regression"}})  # fmt: skip
    train = mf_splits({"left": "left", "ink": "ink"})[0]
    ink = train.labels["ink"].clone()
    ink[200:] = math.inf  # rows 200.. poison the second batch of 200 (unshuffled)
    split = dataclasses.replace(
        train, labels={"left": train.labels["left"], "ink": ink}
    )
    state = _state(tasks=tasks)
    with pytest.raises(
        NonFiniteLossError,
        match=r"task 'ink': the loss is not finite at epoch 2, step 2 of 5",
    ):
        train_one_epoch(state.model, InMemorySource(split, 200), kinds_of(tasks), state.strategy,
                        state.optimizer, CPU, epoch=2)  # fmt: skip
    assert all(
        torch.isfinite(p).all() for p in state.model.parameters()
    )  # no bad step taken


def test_a_non_finite_val_loss_is_an_error_not_a_best_epoch(mf_splits):
    state = _state()
    train, val = _splits(mf_splits)
    with torch.no_grad():
        state.model.heads["right"][0].weight.fill_(math.nan)
    with pytest.raises(
        NonFiniteLossError, match=r"task 'right': the val loss is not finite \(epoch 4"
    ):
        evaluate(state.model, InMemorySource(val, 256), KINDS, CPU, epoch=4)
    # a task without a single labelled row is left out of `loss`, not an error
    unlabelled = dataclasses.replace(
        val,
        labels={
            "left": val.labels["left"],
            "right": torch.full_like(val.labels["right"], -1),
        },
    )
    metrics = evaluate(_state().model, InMemorySource(unlabelled, 256), KINDS, CPU)
    assert math.isnan(metrics["right.loss"]) and metrics["loss"] == metrics["left.loss"]


def test_unshared_stages_get_gradients_from_their_own_task_only():
    model = build_model(TASKS, "lenet", shared_stages=1)
    out = model(torch.randn(4, 1, 36, 36))
    F.cross_entropy(out["left"], torch.tensor([0, 1, 2, 3])).backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.shared.parameters()
    )
    assert all(p.grad is not None for p in model.task_stages["left"].parameters())
    assert all(p.grad is None for p in model.task_stages["right"].parameters())
    assert all(p.grad is None for p in model.heads["right"].parameters())


def test_static_weighting_inside_fit_back_propagates_the_weighted_sum(mf_splits):
    train, _ = _splits(mf_splits)
    train = train.subset(slice(0, 128))
    weighted = _state(weighting="static", optimizer="sgd", lr=0.1)
    manual = copy.deepcopy(weighted.model)
    optimizer = torch.optim.SGD(manual.parameters(), lr=0.1, momentum=0.9)
    train_one_epoch(weighted.model, InMemorySource(train, 128), KINDS, weighted.strategy,
                    weighted.optimizer, CPU)  # fmt: skip
    out = manual(train.images_at(slice(None)))
    loss = F.cross_entropy(out["left"], train.labels["left"]) + 3.0 * F.cross_entropy(
        out["right"], train.labels["right"]
    )
    loss.backward()
    optimizer.step()
    for (name, a), b in zip(
        weighted.model.state_dict().items(), manual.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    equal = _state(weighting="equal", optimizer="sgd", lr=0.1)
    train_one_epoch(equal.model, InMemorySource(train, 128), KINDS, equal.strategy,
                    equal.optimizer, CPU)  # fmt: skip
    assert not torch.allclose(
        equal.model.heads["right"][0].weight, weighted.model.heads["right"][0].weight
    )


@pytest.mark.parametrize(
    ("name", "cls", "group"),
    [
        ("adam", torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1}),
        ("adamw", torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
        ("sgd", torch.optim.SGD, {"lr": 0.01, "weight_decay": 0.1, "momentum": 0.5}),
    ],
)
def test_optimizers_by_name_train_the_model(mf_splits, name, cls, group):
    model = build_model(TASKS, "lenet")
    optimizer = build_optimizer(
        name, model.parameters(), lr=0.01, weight_decay=0.1, momentum=0.5
    )
    assert type(optimizer) is cls
    assert {k: optimizer.param_groups[0][k] for k in group} == group
    state, _, _ = _fit(
        mf_splits, epochs=2, optimizer=name, lr=0.01 if name == "sgd" else 3e-3
    )
    assert state.history[-1]["train.loss"] < state.history[0]["train.loss"]


def test_same_seed_same_weights(mf_splits):
    a, _, _ = _fit(mf_splits, seed=11, epochs=1)
    b, _, _ = _fit(mf_splits, seed=11, epochs=1)
    c, _, _ = _fit(mf_splits, seed=12, epochs=1)
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key]), key
    assert not torch.equal(
        a.model.heads["left"][0].weight, c.model.heads["left"][0].weight
    )


def test_metric_names_take_a_prefix(mf_splits):
    state, _, _ = _fit(mf_splits, epochs=1, prefix="baseline.left.")
    keys = set(state.history[0]) - {"epoch"}
    assert keys and all(k.startswith("baseline.left.") for k in keys)
    assert "baseline.left.val.left.accuracy" in keys


def test_train_state_round_trip_resumes_bit_for_bit(mf_splits, tmp_path):
    train, val = _splits(mf_splits)
    straight, _, _ = _fit(mf_splits, epochs=3)  # uninterrupted

    first, _, _ = _fit(mf_splits, epochs=2)  # interrupted after epoch 2...
    dataset = TorchDataset(str(tmp_path / "state.pt"))
    dataset.save(first.state_dict())
    resumed = _state(seed=99)  # ...and resumed: other initial weights, other data order
    resumed.load_state_dict(dataset.load())
    source = InMemorySource(train, 64, seed=123)
    resumed.restore_rng(source)
    assert (resumed.epoch, resumed.best_epoch, resumed.best_loss) == (
        2, first.best_epoch, first.best_loss,
    )  # fmt: skip
    assert resumed.history == first.history and resumed.bad_epochs == first.bad_epochs
    fit(resumed, source, InMemorySource(val, 256), KINDS, CPU, epochs=3, patience=5)

    assert [h["val.loss"] for h in resumed.history] == [
        h["val.loss"] for h in straight.history
    ]
    for key, value in straight.state_dict()["model"].items():
        assert torch.equal(value, resumed.state_dict()["model"][key]), key
    for key, value in straight.model.state_dict().items():  # the best weights, held
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_the_train_state_saves_the_last_weights_while_the_model_holds_the_best(
    mf_splits,
):
    last = {}

    def keep_last(epoch, record):
        last.update({k: v.clone() for k, v in state.model.state_dict().items()})

    state = _state(lr=5.0)
    train, val = _splits(mf_splits)
    fit(state, InMemorySource(train, 64, seed=1), InMemorySource(val, 256), KINDS, CPU,
        epochs=10, patience=2, on_epoch_end=keep_last)  # fmt: skip
    assert state.best_epoch < state.epoch  # the case that matters
    saved = state.state_dict()["model"]
    assert all(torch.equal(saved[k], v) for k, v in last.items())
    assert all(
        torch.equal(state.model.state_dict()[k], v) for k, v in state.best_state.items()
    )


def test_train_state_refuses_another_format():
    state = _state()
    saved = state.state_dict() | {"format_version": 0}
    with pytest.raises(
        ValueError, match=f"train state format 0 is not {FORMAT_VERSION}"
    ):
        _state().load_state_dict(saved)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_on_a_terminal_only(mf_splits, monkeypatch):
    terminal, pipe = _Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    _fit(mf_splits, epochs=1)
    assert "epoch 1/1" in terminal.getvalue()
    monkeypatch.setattr(sys, "stderr", pipe)
    _fit(mf_splits, epochs=1)
    assert pipe.getvalue() == ""
