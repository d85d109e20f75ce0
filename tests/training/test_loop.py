import io
import sys

import torch

from multitask_cnn.config import ModelConfig, parse_tasks
from multitask_cnn.models import build_model
from multitask_cnn.training import (
    TASK_KINDS,
    evaluate,
    fit,
    get_weighting,
    seed_everything,
)
from multitask_cnn.training.loop import Split, iterate_batches

TASKS = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                     "right": {"kind": "multiclass", "num_classes": 10}})  # fmt: skip
KINDS = {t: TASK_KINDS[s.kind] for t, s in TASKS.items()}
LABELS = {"left": "left", "right": "right"}


def _fit(model_inputs, seed=0, epochs=3, patience=5, lr=3e-3, callback=None):
    train, val, _ = (Split.from_model_input(m, LABELS) for m in model_inputs)
    generator = seed_everything(seed)
    model = build_model(ModelConfig(backbone="lenet"), TASKS)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    result = fit(model, train, val, KINDS, get_weighting("equal", TASKS), optimizer,
                 torch.device("cpu"), epochs=epochs, batch_size=64, eval_batch_size=256,
                 patience=patience, generator=generator, on_epoch_end=callback)  # fmt: skip
    return model, result, val


def test_batches_cover_every_sample_once(model_inputs):
    split = Split.from_model_input(model_inputs[0], LABELS)
    seen = torch.cat([y["left"] for _, y in iterate_batches(split, 64, torch.Generator().manual_seed(0))])
    assert len(seen) == len(split)
    assert sorted(seen.tolist()) == sorted(split.labels["left"].tolist())


def test_fit_learns_real_data_and_keeps_the_best_epoch(model_inputs):
    records = []
    model, result, val = _fit(model_inputs, epochs=4, callback=lambda e, r: records.append((e, r)))
    history = result.history
    assert [e for e, _ in records] == [1, 2, 3, 4] == [h["epoch"] for h in history]
    assert history[-1]["train.loss"] < history[0]["train.loss"]
    best = min(history, key=lambda h: h["val.loss"])
    assert result.best_epoch == best["epoch"]
    # the returned state is the best epoch's, not the last one's
    model.load_state_dict(result.best_state)
    again = evaluate(model, val, KINDS, torch.device("cpu"), 256)
    assert abs(again["loss"] - best["val.loss"]) < 1e-5
    assert again["left.accuracy"] > 0.2 and again["right.accuracy"] > 0.2  # chance is 0.1
    assert set(result.optimizer_state) == {"state", "param_groups"}
    assert {"weight.left", "weight.right", "val.left.accuracy", "train.right.loss"} <= set(history[0])


def test_early_stopping_stops_after_patience(model_inputs):
    # a huge learning rate makes val.loss worse after the first epoch
    _, result, _ = _fit(model_inputs, epochs=10, patience=2, lr=5.0)
    assert result.stopped_early
    assert len(result.history) == result.best_epoch + 2


def test_same_seed_same_weights(model_inputs):
    _, a, _ = _fit(model_inputs, seed=11, epochs=1)
    _, b, _ = _fit(model_inputs, seed=11, epochs=1)
    _, c, _ = _fit(model_inputs, seed=12, epochs=1)
    for key in a.best_state:
        torch.testing.assert_close(a.best_state[key], b.best_state[key])
    assert not torch.equal(a.best_state["heads.left.0.weight"], c.best_state["heads.left.0.weight"])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_on_a_terminal_only(model_inputs, monkeypatch):
    terminal, pipe = _Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    _fit(model_inputs, epochs=1)
    assert "epoch 1/1" in terminal.getvalue()
    monkeypatch.setattr(sys, "stderr", pipe)
    _fit(model_inputs, epochs=1)
    assert pipe.getvalue() == ""
