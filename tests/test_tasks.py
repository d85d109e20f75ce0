import math

import numpy as np
import pytest
import torch

from multitask_cnn.tasks import (
    TASK_KINDS,
    LabelError,
    TaskSpec,
    check_labels,
    check_task_name,
)

MULTICLASS, BINARY, REGRESSION = (
    TASK_KINDS.get(k) for k in ("multiclass", "binary", "regression")
)


def test_missing_labels_are_masked_out_of_the_loss():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]])
    full = MULTICLASS.loss(logits[:2], torch.tensor([0, 1]))
    masked = MULTICLASS.loss(logits, torch.tensor([0, 1, -1]))
    torch.testing.assert_close(full, masked)
    assert MULTICLASS.loss(logits, torch.tensor([-1, -1, -1])).item() == 0.0


@pytest.mark.parametrize(
    ("kind", "output", "target"),
    [
        (MULTICLASS, [[1.0, 0.0], [math.nan, math.inf]], [0, -1]),
        (BINARY, [2.0, math.nan], [1, -1]),
        (REGRESSION, [1.0, math.inf], [3.0, math.nan]),
    ],
)
def test_a_nan_in_a_masked_row_poisons_neither_loss_nor_gradient(kind, output, target):
    output = torch.tensor(output, requires_grad=True)
    loss = kind.loss(output, torch.tensor(target))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(output.grad).all()
    assert (output.grad[1] == 0).all()  # the masked row gets no gradient


def test_loss_sums_count_labelled_rows_only():
    total, count = REGRESSION.loss_sums(torch.tensor([1.0, 2.0, 3.0]),
                                        torch.tensor([1.0, math.nan, 5.0]))  # fmt: skip
    assert count.item() == 2 and total.item() == 4.0


def test_binary_uses_logits_and_masks():
    out = torch.tensor([10.0, -10.0, 0.3])
    assert BINARY.predict(out).tolist() == [1, 0, 1]
    assert BINARY.loss(out[:2], torch.tensor([1, 0])).item() < 1e-3
    assert BINARY.loss(out, torch.tensor([1, 0, -1])).item() < 1e-3


def test_each_kind_owns_its_metrics():
    spec = TaskSpec(kind="multiclass", num_classes=3)
    metrics = MULTICLASS.metrics(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]), spec)
    assert metrics["accuracy"] == 0.75
    assert metrics["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    regression = REGRESSION.metrics(
        np.array([1.0, 2.0]), np.array([2.0, 4.0]), TaskSpec(kind="regression")
    )
    assert regression == {"mae": 1.5, "rmse": pytest.approx(math.sqrt(2.5))}
    assert REGRESSION.lower_is_better == {"mae", "rmse"} == set(regression)
    assert MULTICLASS.lower_is_better.isdisjoint(metrics)  # higher is better
    running = REGRESSION.running_sums(
        torch.tensor([1.0, 0.0]), torch.tensor([3.0, math.nan])
    )
    assert [v.item() for v in running["mae"]] == [2.0, 1]


@pytest.mark.parametrize(
    ("spec", "labels", "message"),
    [
        ({"kind": "multiclass", "num_classes": 3}, torch.tensor([0, 2, 5, 1]),
         "task 't' (multiclass, 3 classes): train row 2 has label 5; labels must be 0..2 or -1"),
        ({"kind": "binary"}, torch.tensor([0, 1, -1, 9]),
         "Labels go up to 9: use kind: multiclass with num_classes: 10."),
        ({"kind": "multiclass", "num_classes": 3}, torch.tensor([0.5, 1.0]),
         "train labels are torch.float32, expected integer class ids"),
        ({"kind": "regression"}, torch.tensor([0, 1]), "expected float values"),
    ],
)  # fmt: skip
def test_labels_are_checked_against_the_spec(spec, labels, message):
    with pytest.raises(LabelError) as error:
        check_labels({"t": TaskSpec(**spec)}, {"t": labels}, "train")
    assert message in str(error.value)


def test_good_labels_pass_including_missing_ones():
    specs = {
        "a": TaskSpec(kind="multiclass", num_classes=3),
        "b": TaskSpec(kind="regression"),
    }
    check_labels(
        specs,
        {"a": torch.tensor([0, -1, 2]), "b": torch.tensor([0.5, math.nan])},
        "val",
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "ordinal"}, "unknown task kind 'ordinal'; choose from"),
        ({"kind": "multiclass"}, "needs num_classes >= 2"),
        ({"kind": "regression", "class_names": ["a"]}, "regression task has no classes"),
        ({"kind": "binary", "num_classes": 10}, "binary task has two classes"),
        ({"kind": "multiclass", "num_classes": 3, "class_names": ["a"]}, "class_names has 1 names, expected 3"),
    ],
)  # fmt: skip
def test_spec_must_fit_its_kind(spec, message):
    with pytest.raises(ValueError, match=message):
        TaskSpec(**spec)


@pytest.mark.parametrize("name", ["loss", "weight", "a.b", "two words", "1st", "class"])
def test_task_names_must_be_usable_in_metric_names(name):
    with pytest.raises(ValueError, match=repr(name)):
        check_task_name(name)


def test_classifiers_give_class_probabilities_that_agree_with_their_answer():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    multiclass = MULTICLASS
    probs = multiclass.probabilities(logits)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))
    assert probs.argmax(dim=1).tolist() == multiclass.predict(logits).tolist()
    binary = BINARY
    yes = torch.tensor([-2.0, 0.5])
    probs = binary.probabilities(yes)  # columns: class 0 (no), class 1 (yes)
    assert probs.shape == (2, 2)
    torch.testing.assert_close(probs[:, 1], torch.sigmoid(yes))
    assert probs.argmax(dim=1).tolist() == binary.predict(yes).tolist() == [0, 1]
    assert REGRESSION.probabilities(yes) is None
