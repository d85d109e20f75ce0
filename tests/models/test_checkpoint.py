import pytest

from multitask_cnn.models.checkpoint import (
    CheckpointMismatchError,
    check_checkpoint,
    task_differences,
)
from multitask_cnn.tasks import TaskSpec

LEFT = TaskSpec(kind="multiclass", num_classes=10)


def _checkpoint(**changes):
    return {
        "format_version": 2,
        "config": {"tasks": {"left": LEFT.model_dump() | {"label": "left"}}},
        "normalisation": {"mean": 0.25, "std": 0.5},
    } | changes


def test_a_matching_checkpoint_returns_the_spec_it_was_trained_with():
    trained = check_checkpoint(
        _checkpoint(), {"left": LEFT}, {"mean": 0.25, "std": 0.5}
    )
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


def test_another_format_or_normalisation_is_refused():
    with pytest.raises(CheckpointMismatchError, match="checkpoint format 1 is not 2"):
        check_checkpoint(_checkpoint(format_version=1), {"left": LEFT})
    with pytest.raises(
        CheckpointMismatchError,
        match="normalised with std 0.4, the model was trained with 0.5",
    ):
        check_checkpoint(_checkpoint(), {"left": LEFT}, {"mean": 0.25, "std": 0.4})
