import pytest
import torch

from multitask_cnn.config import parse_tasks
from multitask_cnn.models import build_model, count_parameters, get_backbone

TASKS = parse_tasks({
    "left": {"kind": "multiclass", "num_classes": 10},
    "right": {"kind": "multiclass", "num_classes": 10, "head_hidden": [16]},
    "shoes": {"kind": "binary", "label": "footwear"},
    "ink": {"kind": "regression"},
})  # fmt: skip


def test_forward_returns_one_output_per_task():
    model = build_model(TASKS, "lenet")
    out = model(torch.randn(5, 1, 36, 36))
    assert set(out) == {"left", "right", "shoes", "ink"}
    assert out["left"].shape == (5, 10) and out["right"].shape == (5, 10)
    assert out["shoes"].shape == (5,) and out["ink"].shape == (5,)


@pytest.mark.parametrize("shared", [0, 1, 2, 3])
def test_shared_stages_sets_how_deep_sharing_goes(shared):
    model = build_model(TASKS, "lenet", shared_stages=shared)
    assert list(model.shared.keys()) == ["conv1", "conv2", "fc"][:shared]
    for task in TASKS:
        assert list(model.task_stages[task].keys()) == ["conv1", "conv2", "fc"][shared:]
    backbone = count_parameters(get_backbone("lenet"))
    heads = sum(count_parameters(h) for h in model.heads.values())
    shared_params = count_parameters(model.shared)
    assert (
        count_parameters(model)
        == shared_params + len(TASKS) * (backbone - shared_params) + heads
    )


def test_unshared_stages_are_independent_copies():
    model = build_model(TASKS, "lenet", shared_stages=1)
    a = model.task_stages["left"]["conv2"][0].weight
    b = model.task_stages["right"]["conv2"][0].weight
    assert a.data_ptr() != b.data_ptr()
    torch.testing.assert_close(a, b)  # same initial weights, separate storage


def test_too_many_shared_stages_is_an_error():
    with pytest.raises(
        ValueError, match="shared_stages=4 but the backbone has 3 stages"
    ):
        build_model(TASKS, "lenet", shared_stages=4)
