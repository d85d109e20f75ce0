import pytest
import torch

from multitask_cnn.config import parse_tasks
from multitask_cnn.registry import UnknownNameError
from multitask_cnn.training import get_weighting

TASKS = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                     "right": {"kind": "multiclass", "num_classes": 10, "loss_weight": 3}})  # fmt: skip


def test_equal_and_static_weighting_combine_the_losses():
    losses = {"left": torch.tensor(1.0), "right": torch.tensor(2.0)}
    assert get_weighting("equal", TASKS).combine(losses).item() == 3.0
    static = get_weighting("static", TASKS)
    assert static.weights == {"left": 1.0, "right": 3.0}
    assert static.combine(losses).item() == 7.0


def test_state_round_trip_and_mismatch():
    static = get_weighting("static", TASKS)
    other = get_weighting("equal", TASKS)
    other.load_state_dict(static.state_dict())
    assert other.weights == {"left": 1.0, "right": 3.0}
    with pytest.raises(ValueError, match=r"for tasks \['a'\], not \['left', 'right'\]"):
        other.load_state_dict({"weights": {"a": 1.0}})


def test_unknown_weighting_names_the_choices():
    with pytest.raises(
        UnknownNameError,
        match=r"unknown weighting 'magic'; choose from \['equal', 'static'\]",
    ):
        get_weighting("magic", TASKS)
