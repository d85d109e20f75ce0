"""Task fusion: one concatenated batch per step through the shared stages; each task's
head and loss see only its own source's rows; epochs as configured."""

import pytest
import torch

from multitask_cnn.errors import UserError
from multitask_cnn.models import build_model
from multitask_cnn.tasks import TaskSpec, kinds_of
from multitask_cnn.training import (
    BatchSizeError,
    Budget,
    ChainedSource,
    FusedSource,
    InMemorySource,
    Split,
    evaluate,
    fuse,
    get_weighting,
    predict,
    train_model,
    train_one_epoch,
)

CPU = torch.device("cpu")
# task `a` reads source A, task `b` source B; both are 3-class
TASKS = {
    "a": TaskSpec(
        kind="multiclass", num_classes=3, source="multifashion", label="left"
    ),
    "b": TaskSpec(kind="multiclass", num_classes=3, source="digits", label="digit"),
}


def _split(n, task, value, label, seed):
    """``n`` uint8 images of pixel ``value`` (plus noise) whose ``task`` label is ``label``."""
    g = torch.Generator().manual_seed(seed)
    images = (
        torch.full((n, 1, 36, 36), value)
        + torch.randint(0, 20, (n, 1, 36, 36), generator=g)
    ).to(torch.uint8)
    return Split(
        images, {task: torch.full((n,), label, dtype=torch.int64)}, mean=0.3, std=0.3
    )


def _sources():
    # A's rows all say class 0 for `a`, B's rows class 2 for `b`: a head fed the other
    # source's rows would be pulled towards the wrong class
    return {"A": _split(100, "a", 30, 0, 1), "B": _split(30, "b", 200, 2, 2)}


def test_a_fused_batch_is_normalised_per_source_and_refuses_a_task_twice():
    splits = _sources()
    batch = fuse([splits["A"].batch(slice(0, 8)), splits["B"].batch(slice(0, 4))])
    assert batch.images.shape == (12, 1, 36, 36) and batch.images.dtype == torch.float32
    assert batch.rows == {"a": slice(0, 8), "b": slice(8, 12)}
    assert (
        batch.labels["a"].tolist() == [0] * 8 and batch.labels["b"].tolist() == [2] * 4
    )
    expected = (30 / 255 - 0.3) / 0.3  # normalised as read, per source
    assert batch.images[:8].min() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="task 'a' comes from two fused sources"):
        fuse([splits["A"].batch(slice(0, 2)), splits["A"].batch(slice(2, 4))])


def test_each_head_and_loss_see_only_their_own_rows_in_one_shared_forward():
    splits = _sources()
    torch.manual_seed(0)
    model = build_model(TASKS, "lenet")
    shared_calls, head_rows = [], {}
    model.shared["conv1"].register_forward_hook(
        lambda m, i, o: shared_calls.append(len(i[0]))
    )
    for task in TASKS:
        model.heads[task].register_forward_hook(
            lambda m, i, o, task=task: head_rows.setdefault(task, []).append(len(i[0]))
        )
    source = FusedSource({"A": InMemorySource(splits["A"], 16, seed=0),
                          "B": InMemorySource(splits["B"], 8, seed=1)})  # fmt: skip
    weighting = get_weighting("equal", TASKS)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: weights stay
    metrics = train_one_epoch(model, source, kinds_of(TASKS), weighting, optimizer, CPU)

    assert len(source) == 7  # ceil(100 / 16): the largest source sets the epoch
    # one shared forward per step, on both blocks; B (30 rows) runs passes of 8, 8, 8, 6
    assert shared_calls == [24, 24, 24, 22, 24, 24, 12]
    assert head_rows == {"a": [16] * 6 + [4], "b": [8, 8, 8, 6, 8, 8, 8]}
    # the epoch's loss of each task equals its loss on its own source alone
    model.eval()
    alone = {t: evaluate(model, InMemorySource(splits[s], 1000), kinds_of({t: TASKS[t]}), CPU)
             for t, s in (("a", "A"), ("b", "B"))}  # fmt: skip
    assert metrics["a.loss"] == pytest.approx(alone["a"]["a.loss"], rel=1e-5)
    # B cycles: 7 batches of 8 = 56 rows from a source of 30 (each row once per pass)
    assert metrics["b.loss"] == pytest.approx(alone["b"]["b.loss"], rel=0.05)


def test_training_on_fused_sources_learns_each_task_from_its_own_labels():
    splits = _sources()
    budget = Budget(epochs=3, batch_size=16, eval_batch_size=64, optimizer="adam", lr=3e-3,
                    weight_decay=0.0, momentum=0.9, patience=5, min_delta=0.0, seed=0,
                    source_batch_size={"B": 8})  # fmt: skip
    state = train_model(
        lambda: build_model(TASKS, "lenet"), TASKS, splits, splits, CPU, budget
    )
    outputs = predict(
        state.model,
        ChainedSource([InMemorySource(s, 64) for s in splits.values()]),
        CPU,
    )
    assert outputs["a"].shape == (100, 3) and outputs["b"].shape == (
        30,
        3,
    )  # own rows only
    assert (outputs["a"].argmax(1) == 0).all() and (outputs["b"].argmax(1) == 2).all()
    assert {"val.a.accuracy", "val.b.accuracy"} <= set(state.history[-1])


def test_sources_with_other_image_shapes_are_refused_naming_them():
    from multitask_cnn.training import task_splits

    inputs = {"multifashion": {"images": torch.zeros(4, 1, 36, 36, dtype=torch.uint8),
                               "labels": {"left": torch.zeros(4, dtype=torch.int64)}},
              "digits": {"images": torch.zeros(4, 3, 36, 36, dtype=torch.uint8),
                         "labels": {"digit": torch.zeros(4, dtype=torch.int64)}}}  # fmt: skip
    stats = {s: {"mean": 0.1, "std": 0.2} for s in inputs}
    with pytest.raises(ValueError, match=r"different shapes .*'digits': \(3, 36, 36\)"):
        task_splits(inputs, stats, TASKS, "train")
    with pytest.raises(ValueError, match="no source 'digits'"):
        task_splits({"multifashion": inputs["multifashion"]}, stats, TASKS, "train")


def test_a_batch_larger_than_its_source_is_refused():
    splits = _sources()  # A: 100 train rows, B: 30
    budget = Budget(epochs=1, batch_size=16, eval_batch_size=64, optimizer="adam", lr=3e-3,
                    weight_decay=0.0, momentum=0.9, patience=5, min_delta=0.0, seed=0,
                    source_batch_size={"B": 40})  # fmt: skip
    with pytest.raises(BatchSizeError) as raised:
        train_model(
            lambda: build_model(TASKS, "lenet"), TASKS, splits, splits, CPU, budget
        )
    assert str(raised.value).startswith(
        "batch size 40 is larger than the 30 train rows of source 'B': lower "
        "training.batch_size (or training.fusion.batch_size"
    )
    assert isinstance(raised.value, UserError)
