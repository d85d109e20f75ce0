import pytest
import torch

from multitask_cnn.config import parse_tasks
from multitask_cnn.models import build_model
from multitask_cnn.tasks import kinds_of
from multitask_cnn.training import (
    Batch,
    InMemorySource,
    TrainState,
    build_optimizer,
    fit,
    fuse,
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


def test_a_fused_probe_takes_each_tasks_gradient_on_its_own_rows():
    torch.manual_seed(0)
    model = build_model(TWINS, "lenet")
    kinds = kinds_of(TWINS)
    images, labels = torch.randn(48, 1, 36, 36), torch.randint(0, 10, (48,))
    probe = fuse([Batch(images[:32], {"a": labels[:32]}),
                  Batch(images[32:], {"b": labels[32:]})])  # fmt: skip
    assert probe.rows == {"a": slice(0, 32), "b": slice(32, 48)}
    shared = list(model.shared.parameters())
    model.eval()
    grads = []
    for task, rows in (("a", slice(0, 32)), ("b", slice(32, 48))):
        loss = kinds[task].loss(model(images[rows])[task], labels[rows])
        grads.append(
            torch.cat([g.flatten() for g in torch.autograd.grad(loss, shared)])
        )
    expected = torch.nn.functional.cosine_similarity(*grads, dim=0).item()
    cosines = gradient_cosines(model, probe, kinds, torch.device("cpu"))
    assert cosines == {"grad_cos.a.b": pytest.approx(expected, abs=1e-5)}


def test_fit_records_the_cosines_each_epoch_with_a_probe(mf_splits):
    tasks = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                         "right": {"kind": "multiclass", "num_classes": 10}})  # fmt: skip
    train, val, _ = mf_splits({"left": "left", "right": "right"})
    model = build_model(tasks, "lenet")
    state = TrainState(
        model,
        build_optimizer("adam", model.parameters(), lr=1e-3),
        get_weighting("equal", tasks),
    )
    probe = val.batch(slice(0, 64))  # normalised float32, as the model trains on
    fit(state, InMemorySource(train, 64, seed=0), InMemorySource(val, 256), kinds_of(tasks),
        torch.device("cpu"), epochs=2, patience=3, probe=probe)  # fmt: skip
    values = [h["grad_cos.left.right"] for h in state.history]
    assert len(values) == 2 and all(-1 <= v <= 1 for v in values)
