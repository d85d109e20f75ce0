import pytest
import torch

from multitask_cnn.models import build_model
from multitask_cnn.models.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointMismatchError,
    build_checkpoint,
    check_checkpoint,
    task_differences,
)
from multitask_cnn.tasks import TaskSpec

LEFT = TaskSpec(kind="multiclass", num_classes=10)
INK = {"mean": 0.2, "std": 0.05, "n": 900}
STATS = {"mean": 0.25, "std": 0.5, "targets": {"ink": INK}}


def _checkpoint(**changes):
    return {
        "format_version": 3,
        "config": {"tasks": {"left": LEFT.model_dump() | {"label": "left"}}},
        "normalisation": {"multifashion": STATS},
    } | changes


def test_a_matching_checkpoint_returns_the_spec_it_was_trained_with():
    assert CHECKPOINT_FORMAT == 3
    # sources the model did not read (digits) may come and go
    now = {"multifashion": dict(STATS), "digits": {"mean": 0.1, "std": 0.3}}
    trained = check_checkpoint(_checkpoint(), {"left": LEFT}, now)
    assert trained == {"left": LEFT.model_copy(update={"label": "left"})}


def test_every_difference_is_named():
    current = {
        "left": TaskSpec(kind="binary", label="footwear"),
        "ink": TaskSpec(kind="regression"),
    }
    trained = {"left": LEFT, "right": LEFT}
    assert task_differences(current, trained) == [
        "task 'ink' is in the spec but not in the checkpoint",
        "task 'right' is in the checkpoint but not in the spec",
        "task 'left': kind is 'binary' in the spec, 'multiclass' in the checkpoint",
        "task 'left': num_classes is None in the spec, 10 in the checkpoint",
        "task 'left': label is 'footwear' in the spec, 'left' in the checkpoint",
    ]
    digit = TaskSpec(kind="multiclass", num_classes=10, source="digits", label="left")
    assert task_differences({"left": digit}, {"left": LEFT}) == [
        "task 'left': source is 'digits' in the spec, 'multifashion' in the checkpoint"
    ]


def test_another_format_or_normalisation_is_refused():
    with pytest.raises(CheckpointMismatchError, match="checkpoint format 2 is not 3"):
        check_checkpoint(_checkpoint(format_version=2), {"left": LEFT})
    with pytest.raises(
        CheckpointMismatchError,
        match="source 'multifashion': the data is normalised with std 0.4, "
        "the model was trained with 0.5",
    ):
        check_checkpoint(
            _checkpoint(), {"left": LEFT}, {"multifashion": STATS | {"std": 0.4}}
        )


def test_other_target_statistics_or_a_missing_source_are_refused():
    moved = STATS | {"targets": {"ink": INK | {"mean": 0.3}}}
    with pytest.raises(CheckpointMismatchError) as error:
        check_checkpoint(_checkpoint(), {"left": LEFT}, {"multifashion": moved})
    assert (
        "source 'multifashion' label 'ink': the data is normalised with mean 0.3, "
        "the model was trained with 0.2" in str(error.value)
    )
    assert "with std" not in str(error.value)  # only what differs is named
    with pytest.raises(CheckpointMismatchError) as error:
        check_checkpoint(_checkpoint(), {"left": LEFT},
                         {"multifashion": STATS | {"targets": {}}})  # fmt: skip
    assert (
        "source 'multifashion' label 'ink': the data is normalised with mean none, "
        "the model was trained with 0.2" in str(error.value)
    )
    with pytest.raises(
        CheckpointMismatchError,
        match="the model was trained on source 'multifashion', which the data lacks",
    ):
        check_checkpoint(_checkpoint(), {"left": LEFT}, {"digits": STATS})


def test_a_built_checkpoint_describes_its_sources_and_labelled_rows():
    torch.manual_seed(0)
    model = build_model({"left": LEFT}, "lenet")
    checkpoint = build_checkpoint(
        model, best_epoch=2, best_loss=0.5,
        config={"tasks": {"left": LEFT.model_dump() | {"label": "left"}}},
        normalisation={"multifashion": STATS},
        input_fingerprint={"train": "a", "val": "b"}, provenance={},
        labelled={"left": {"train": 800, "val": 300}},
    )  # fmt: skip
    assert checkpoint["format_version"] == CHECKPOINT_FORMAT
    assert checkpoint["normalisation"] == {"multifashion": STATS}
    assert checkpoint["labelled"] == {"left": {"train": 800, "val": 300}}
    assert checkpoint["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert check_checkpoint(checkpoint, {"left": LEFT}, {"multifashion": STATS})
