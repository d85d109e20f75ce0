import math

import torch

from multitask_cnn.config import parse_tasks
from multitask_cnn.training import TASK_KINDS, get_weighting


def test_missing_labels_are_masked_out_of_the_loss():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]])
    full = TASK_KINDS["multiclass"].loss(logits[:2], torch.tensor([0, 1]))
    masked = TASK_KINDS["multiclass"].loss(logits, torch.tensor([0, 1, -1]))
    torch.testing.assert_close(full, masked)
    none = TASK_KINDS["multiclass"].loss(logits, torch.tensor([-1, -1, -1]))
    assert none.item() == 0.0


def test_regression_ignores_nan_targets():
    out = torch.tensor([1.0, 2.0, 3.0])
    loss = TASK_KINDS["regression"].loss(out, torch.tensor([1.0, float("nan"), 5.0]))
    assert math.isclose(loss.item(), (0 + 4) / 2)


def test_binary_uses_logits_and_masks():
    kind = TASK_KINDS["binary"]
    out = torch.tensor([10.0, -10.0, 0.3])
    assert kind.predict(out).tolist() == [1, 0, 1]
    assert kind.loss(out[:2], torch.tensor([1, 0])).item() < 1e-3
    assert kind.loss(out, torch.tensor([1, 0, -1])).item() < 1e-3


def test_equal_and_static_weighting():
    tasks = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                         "right": {"kind": "multiclass", "num_classes": 10, "loss_weight": 3}})  # fmt: skip
    losses = {"left": torch.tensor(1.0), "right": torch.tensor(2.0)}
    assert get_weighting("equal", tasks).combine(losses).item() == 3.0
    static = get_weighting("static", tasks)
    assert static.weights == {"left": 1.0, "right": 3.0}
    assert static.combine(losses).item() == 7.0
