import pytest
import torch

from multitask_cnn.config import parse_tasks
from multitask_cnn.models import build_model
from multitask_cnn.tasks import kinds_of
from multitask_cnn.training import (
    Batch,
    InMemorySource,
    Split,
    TrainState,
    build_optimizer,
    fit,
    get_weighting,
)
from multitask_cnn.training.diagnostics import gradient_cosines

TWINS = parse_tasks({"a": {"kind": "multiclass", "num_classes": 10, "label": "left"},
                     "b": {"kind": "multiclass", "num_classes": 10, "label": "left"}})  # fmt: skip


def _probe(labels_b=None):
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (32,))
    return Batch(
        torch.randn(32, 1, 36, 36),
        {"a": labels, "b": labels if labels_b is None else labels_b},
    )


def test_identical_tasks_have_identical_gradients():
    torch.manual_seed(0)
    model = build_model(TWINS, "lenet")
    model.heads["b"].load_state_dict(model.heads["a"].state_dict())
    cosines = gradient_cosines(model, _probe(), kinds_of(TWINS), torch.device("cpu"))
    assert cosines["grad_cos.a.b"] == pytest.approx(1.0, abs=1e-5)
    other = gradient_cosines(
        model, _probe(torch.randint(0, 10, (32,))), kinds_of(TWINS), torch.device("cpu")
    )
    assert other["grad_cos.a.b"] < 0.9  # other labels: other gradients
    assert gradient_cosines(build_model(TWINS, "lenet", shared_stages=0), _probe(),
                            kinds_of(TWINS), torch.device("cpu")) == {}  # fmt: skip


def test_fit_records_the_cosines_each_epoch_with_a_probe(model_inputs):
    tasks = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                         "right": {"kind": "multiclass", "num_classes": 10}})  # fmt: skip
    train, val = (
        Split.from_model_input(m, {"left": "left", "right": "right"})
        for m in model_inputs[:2]
    )
    model = build_model(tasks, "lenet")
    state = TrainState(
        model,
        build_optimizer("adam", model.parameters(), lr=1e-3),
        get_weighting("equal", tasks),
    )
    probe = Batch(val.images[:64], {t: y[:64] for t, y in val.labels.items()})
    fit(state, InMemorySource(train, 64, seed=0), InMemorySource(val, 256), kinds_of(tasks),
        torch.device("cpu"), epochs=2, patience=3, probe=probe)  # fmt: skip
    values = [h["grad_cos.left.right"] for h in state.history]
    assert len(values) == 2 and all(-1 <= v <= 1 for v in values)
