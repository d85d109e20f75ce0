"""Batch sources of several data sources: fused batches, task rows, task splits."""

import math

import pytest
import torch

from multitask_cnn.config import TrainingConfig, parse_tasks
from multitask_cnn.models import build_model
from multitask_cnn.tasks import LabelError, TaskSpec, kinds_of
from multitask_cnn.training import (
    Batch,
    ChainedSource,
    FusedSource,
    InMemorySource,
    Split,
    evaluate,
    fuse,
    labelled_counts,
    task_splits,
    train_model,
)

CPU = torch.device("cpu")


def _ids(n: int, task: str, side: int = 2) -> Split:
    """``n`` uint8 images whose pixels are their row number; ``task``'s label too."""
    images = (
        torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, side, side)
    )
    return Split(images.contiguous(), {task: torch.arange(n)})


def _rows(batch: Batch, task: str) -> list[int]:
    """The row numbers of ``task``'s block, read back from the normalised images."""
    images = batch.images[batch.rows[task]]
    return (images[:, 0, 0, 0] * 255).round().long().tolist()


def test_a_fused_batch_stacks_one_block_per_source():
    a = _ids(10, "x")
    b = Split(_ids(6, "y").images, {"y": torch.arange(6), "z": -torch.arange(6)})
    first, second = a.batch(slice(0, 3)), b.batch(slice(2, 4))
    assert fuse([first]) is first
    fused = fuse([first, second])
    assert fused.images.shape == (5, 1, 2, 2) and fused.images.dtype == torch.float32
    assert fused.rows == {"x": slice(0, 3), "y": slice(3, 5), "z": slice(3, 5)}
    assert _rows(fused, "x") == [0, 1, 2] and _rows(fused, "y") == [2, 3]
    assert fused.labels["z"].tolist() == [-2, -3]
    again = fuse([fused, _ids(4, "w").batch(slice(0, 4))])  # a fused batch fuses again
    assert again.rows == {"x": slice(0, 3), "y": slice(3, 5), "z": slice(3, 5),
                          "w": slice(5, 9)}  # fmt: skip
    with pytest.raises(ValueError, match="task 'x' comes from two fused sources"):
        fuse([first, a.batch(slice(3, 5))])


def test_the_model_computes_each_task_of_a_fused_batch_on_its_own_rows():
    specs = {
        "x": TaskSpec(kind="multiclass", num_classes=10),
        "y": TaskSpec(kind="binary"),
    }
    torch.manual_seed(0)
    model = build_model(specs, "lenet").eval()
    images = torch.randn(5, 1, 36, 36)
    with torch.no_grad():
        outputs = model(images, {"x": slice(0, 3), "y": slice(3, 5)})
        alone = model(images)
        only_x = model(images, {"x": slice(1, 2)})
    assert set(outputs) == {"x", "y"} and set(only_x) == {"x"}
    assert outputs["x"].shape == (3, 10) and outputs["y"].shape == (2,)
    torch.testing.assert_close(outputs["x"], alone["x"][:3])
    torch.testing.assert_close(outputs["y"], alone["y"][3:])
    torch.testing.assert_close(only_x["x"], alone["x"][1:2])


@pytest.mark.parametrize(
    ("steps", "expected"), [("largest", 5), ("smallest", 2), (3, 3)]
)
def test_a_fused_epoch_has_the_steps_it_is_asked_for(steps, expected):
    fused = FusedSource({"big": InMemorySource(_ids(10, "x"), 2, seed=0),
                         "small": InMemorySource(_ids(4, "y"), 2, seed=1)}, steps)  # fmt: skip
    batches = list(fused)
    assert len(fused) == len(batches) == expected
    assert all(b.rows == {"x": slice(0, 2), "y": slice(2, 4)} for b in batches)


def test_largest_sees_every_row_of_the_largest_source_and_cycles_the_smaller():
    fused = FusedSource({"big": InMemorySource(_ids(10, "x"), 2, seed=0),
                         "small": InMemorySource(_ids(4, "y"), 2, seed=1)})  # fmt: skip
    epochs = [list(fused) for _ in range(2)]
    for batches in epochs:
        assert sorted(r for b in batches for r in _rows(b, "x")) == list(range(10))
        for b in batches:  # images and labels stay together
            assert b.labels["x"].tolist() == _rows(b, "x")
            assert b.labels["y"].tolist() == _rows(b, "y")
    # 2 epochs of 5 steps are 5 passes over the small source; a pass left unfinished at
    # the end of epoch 1 carries on in epoch 2
    small = [r for batches in epochs for b in batches for r in _rows(b, "y")]
    passes = [small[i : i + 4] for i in range(0, 20, 4)]
    assert all(sorted(p) == [0, 1, 2, 3] for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # shuffled anew each pass
    with pytest.raises(ValueError, match="steps must be 'largest', 'smallest'"):
        FusedSource({"big": InMemorySource(_ids(10, "x"), 2)}, steps=0)


def test_a_fused_source_restores_its_data_order():
    def source():
        return FusedSource({"big": InMemorySource(_ids(16, "x"), 4, seed=0),
                            "small": InMemorySource(_ids(6, "y"), 3, seed=1)})  # fmt: skip

    straight = source()
    list(straight)  # epoch 1: 4 steps, two whole passes over the small source
    saved = straight.state_dict()
    resumed = source()
    resumed.load_state_dict(saved)
    for a, b in zip(straight, resumed, strict=True):  # epoch 2
        assert _rows(a, "x") == _rows(b, "x") and _rows(a, "y") == _rows(b, "y")


def test_a_fused_source_resumes_a_pass_left_unfinished_at_the_end_of_an_epoch():
    def source():
        return FusedSource({"big": InMemorySource(_ids(9, "x"), 3, seed=0),
                            "small": InMemorySource(_ids(4, "y"), 2, seed=1)})  # fmt: skip

    straight = source()
    list(straight)  # 3 steps: the small source's second pass stops after one batch
    resumed = source()
    resumed.load_state_dict(straight.state_dict())
    for a, b in zip(straight, resumed, strict=True):
        assert _rows(a, "y") == _rows(b, "y")


def test_a_chained_source_goes_through_each_source_in_turn():
    chained = ChainedSource([InMemorySource(_ids(5, "x"), 2),
                             InMemorySource(_ids(3, "y"), 2)])  # fmt: skip
    batches = list(chained)
    assert len(chained) == len(batches) == 5
    assert [set(b.labels) for b in batches] == [{"x"}] * 3 + [{"y"}] * 2
    assert [r for b in batches[:3] for r in _rows(b, "x")] == list(range(5))


SPECS = parse_tasks({
    "digit": {"kind": "multiclass", "num_classes": 10, "source": "digits"},
    "left": {"kind": "multiclass", "num_classes": 10},
    "ink": {"kind": "regression"},
})  # fmt: skip


def _model_input(n=6, side=4):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (n, 1, side, side), dtype=torch.uint8)
    ink = torch.tensor([0.1, 0.3, math.nan, 0.5, 0.2, 0.4][:n])
    return {
        "multifashion": {"images": images, "labels": {"left": torch.arange(n) % 10,
                         "right": torch.zeros(n, dtype=torch.long), "ink": ink}},
        "digits": {"images": images.flip(0), "labels": {"digit": torch.tensor([3, -1, 9, 0, 1, 2][:n])}},
    }  # fmt: skip


STATS = {
    "multifashion": {"mean": 0.2, "std": 0.4, "targets": {"ink": {"mean": 0.3, "std": 0.1}}},
    "digits": {"mean": 0.1, "std": 0.25, "targets": {}},
}  # fmt: skip


def test_task_splits_give_each_source_its_tasks_and_normalisation():
    data = _model_input()
    splits = task_splits(data, STATS, SPECS, "train")
    assert list(splits) == [
        "digits",
        "multifashion",
    ]  # in the order of their first task
    digits, multifashion = splits["digits"], splits["multifashion"]
    assert set(digits.labels) == {"digit"} and set(multifashion.labels) == {
        "left",
        "ink",
    }
    assert (digits.mean, digits.std, multifashion.mean, multifashion.std) == (
        0.1,
        0.25,
        0.2,
        0.4,
    )
    torch.testing.assert_close(
        digits.images_at(slice(None)),
        (data["digits"]["images"].float() / 255 - 0.1) / 0.25,
    )
    # regression labels are standardised with the train statistics; unscale undoes it
    ink = data["multifashion"]["labels"]["ink"]
    assert multifashion.target_scaling == {"ink": (0.3, 0.1)}
    torch.testing.assert_close(
        multifashion.labels["ink"], (ink - 0.3) / 0.1, equal_nan=True
    )
    torch.testing.assert_close(multifashion.unscale("ink", multifashion.labels["ink"]), ink,
                               equal_nan=True)  # fmt: skip
    assert torch.equal(multifashion.unscale("left", multifashion.labels["left"]),
                       data["multifashion"]["labels"]["left"])  # fmt: skip
    assert labelled_counts(SPECS, {"train": splits, "val": splits}) == {
        "digit": {"train": 5, "val": 5}, "left": {"train": 6, "val": 6},
        "ink": {"train": 5, "val": 5},
    }  # fmt: skip


def test_task_splits_name_the_split_and_source_of_what_is_wrong():
    data = _model_input()
    data["digits"]["labels"]["digit"] = torch.tensor([3, 1, 12, 0, 1, 2])
    with pytest.raises(
        LabelError, match="task 'digit' .*: val digits row 2 has label 12"
    ):
        task_splits(data, STATS, SPECS, "val")
    with pytest.raises(ValueError, match="the test model input has no source 'digits'"):
        task_splits({"multifashion": data["multifashion"]}, STATS, SPECS, "test")
    with pytest.raises(
        ValueError, match="task 'left': source 'multifashion' has no label"
    ):
        task_splits(data, STATS, {"left": TaskSpec(kind="multiclass", num_classes=10,
                                                   label="top")}, "train")  # fmt: skip
    bigger = _model_input(side=6)["digits"]
    with pytest.raises(ValueError, match="images of different shapes"):
        task_splits(data | {"digits": bigger}, STATS, SPECS, "train")


def test_fused_training_trains_and_validates_each_task_on_its_own_source():
    specs = parse_tasks({
        "digit": {"kind": "multiclass", "num_classes": 10, "source": "digits"},
        "left": {"kind": "multiclass", "num_classes": 10},
    })  # fmt: skip
    torch.manual_seed(1)

    def split(n, task):
        images = torch.randint(0, 256, (n, 1, 36, 36), dtype=torch.uint8)
        return Split(images, {task: torch.randint(0, 10, (n,))}, 0.5, 0.3)

    train = {"digits": split(40, "digit"), "multifashion": split(96, "left")}
    val = {"digits": split(20, "digit"), "multifashion": split(30, "left")}
    budget = TrainingConfig(epochs=1, batch_size=32, seed=0,
                            fusion={"batch_size": {"digits": 8}}).budget()  # fmt: skip
    state = train_model(lambda: build_model(specs, "lenet"), specs, train, val, CPU,
                        budget, probe_rows=4)  # fmt: skip
    record = state.history[0]
    for task in ("digit", "left"):
        assert math.isfinite(record[f"train.{task}.loss"])
        assert 0 <= record[f"val.{task}.accuracy"] <= 1
    assert "grad_cos.digit.left" in record
    kinds = kinds_of(specs)
    for source, task in (("digits", "digit"), ("multifashion", "left")):
        alone = evaluate(state.model, InMemorySource(val[source], 7),
                         {task: kinds[task]}, CPU)  # fmt: skip
        assert record[f"val.{task}.loss"] == pytest.approx(alone["loss"], rel=1e-5)
        assert record[f"val.{task}.accuracy"] == pytest.approx(
            alone[f"{task}.accuracy"]
        )
    assert record["val.loss"] == pytest.approx(
        record["val.digit.loss"] + record["val.left.loss"]
    )


def test_a_model_depends_on_its_sources_statistics_not_on_the_data_prep_build():
    from multitask_cnn.training.sources import used_stats

    specs = {"left": TaskSpec(kind="multiclass", num_classes=10)}
    stats = {"multifashion": {"mean": 0.2, "std": 0.3, "targets": {}, "build": "ab12"},
             "digits": {"mean": 0.1, "std": 0.2, "targets": {}, "build": "ab12"}}  # fmt: skip
    assert used_stats(stats, specs) == {
        "multifashion": {"mean": 0.2, "std": 0.3, "targets": {}}
    }
