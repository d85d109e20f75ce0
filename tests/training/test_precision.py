"""Mixed precision and channels-last on the CPU (torch's CPU autocast has bf16 and
fp16): what each setting resolves to, what fp16 refuses before training, and real
trainings on MultiFashion in each of them."""

import math
from types import SimpleNamespace

import pydantic
import pytest
import torch

from multitask_cnn.config import TrainingConfig, parse_tasks
from multitask_cnn.models import build_model
from multitask_cnn.training import train_model
from multitask_cnn.training.compiling import CompileError
from multitask_cnn.training.precision import (
    PrecisionError,
    resolve_channels_last,
    resolve_precision,
)

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
TASKS = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                     "right": {"kind": "multiclass", "num_classes": 10}})  # fmt: skip
LABELS = {"left": "left", "right": "right"}


def test_auto_is_fp32_on_the_cpu_and_bf16_or_fp16_on_a_gpu(monkeypatch):
    assert resolve_precision("auto", CPU).name == "fp32"
    assert resolve_precision("bf16", CPU).name == "bf16"  # asked for: used
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", CUDA).name == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # e.g. a T4
    assert resolve_precision("auto", CUDA).name == "fp16"
    # a strategy fp16 cannot serve: auto falls back to fp32 there
    assert resolve_precision("auto", CUDA, "upgrad", "gradient").name == "fp32"
    assert resolve_precision("auto", CUDA, "gradnorm", "loss").name == "fp32"
    assert resolve_channels_last("auto", CUDA) and not resolve_channels_last(
        "auto", CPU
    )
    assert resolve_channels_last(True, CPU)


def test_fp16_refuses_gradient_level_strategies_before_training():
    with pytest.raises(PrecisionError, match="fp16 cannot be combined with .*'upgrad'"):
        resolve_precision("fp16", CPU, "upgrad", "gradient")
    with pytest.raises(pydantic.ValidationError, match="'gradnorm'.*use bf16"):
        TrainingConfig(precision="fp16", weighting="gradnorm")
    TrainingConfig(precision="fp16", weighting="uncertainty")  # loss-level: fine
    TrainingConfig(precision="bf16", weighting="upgrad")  # no scaler: fine


def _train(mf_splits, weighting="equal", epochs=2, architecture="hard", **settings):
    train, val, _ = mf_splits(LABELS)
    seen = SimpleNamespace(dtypes=set())

    def build():
        model = build_model(TASKS, "lenet", architecture=architecture)
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        first.register_forward_hook(  # the first convolution: the trunk's or a column's
            lambda module, args, out: seen.dtypes.add(out.dtype)
        )  # fmt: skip
        seen.model = model
        return model

    budget = TrainingConfig(epochs=epochs, batch_size=64, seed=1, lr=3e-3,
                            early_stopping={"patience": 10}, **settings).budget()  # fmt: skip
    state = train_model(build, TASKS, train, val, CPU, budget, weighting=weighting)
    return state, seen


@pytest.mark.parametrize("weighting", ["equal", "upgrad"])
def test_bf16_autocast_trains_a_loss_and_a_gradient_level_strategy(
    mf_splits, weighting
):
    state, seen = _train(mf_splits, weighting, precision="bf16")
    assert seen.dtypes == {torch.bfloat16}  # the trunk ran in bf16
    assert all(p.dtype == torch.float32 for p in seen.model.parameters())
    last = state.history[-1]
    assert last["val.left.accuracy"] > 0.3 and last["val.right.accuracy"] > 0.3
    assert state.scaler is None  # bf16 needs none


def test_fp16_trains_through_the_gradient_scaler_and_saves_it(mf_splits):
    state, seen = _train(mf_splits, "uncertainty", precision="fp16")
    assert seen.dtypes == {torch.float16}
    assert state.history[-1]["val.left.accuracy"] > 0.3
    saved = state.state_dict()["scaler"]
    assert saved["scale"] >= 2.0**14  # from 2^16, halved at each overflow (skipped)
    fresh, _ = _train(mf_splits, "uncertainty", epochs=1, precision="fp16")
    fresh.load_state_dict(state.state_dict())  # a resume continues with its scale
    assert fresh.scaler.get_scale() == state.scaler.get_scale()


def test_channels_last_gives_the_same_training_within_rounding(mf_splits):
    plain, _ = _train(mf_splits, epochs=1, channels_last=False)
    last, seen = _train(mf_splits, epochs=1, channels_last=True)
    conv = seen.model.shared.conv1[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert last.history[0]["val.loss"] == pytest.approx(
        plain.history[0]["val.loss"], rel=1e-3
    )


def test_a_compiled_model_trains_as_the_plain_one(mf_splits):
    """training.compile with AOTAutograd's eager backend (no C compiler needed): the
    trunk and the task outputs run compiled, the state dict keeps its names; what a
    compiled model cannot serve is refused before training."""
    plain, _ = _train(mf_splits, "uncertainty", epochs=1)
    compiled, seen = _train(mf_splits, "uncertainty", epochs=1, compile="aot_eager")
    assert hasattr(seen.model.shared_features, "_torchdynamo_orig_callable")
    assert hasattr(seen.model.task_outputs, "_torchdynamo_orig_callable")
    assert list(compiled.model.state_dict()) == list(plain.model.state_dict())
    assert compiled.history[0]["val.loss"] == pytest.approx(
        plain.history[0]["val.loss"], rel=1e-3
    )
    with pytest.raises(pydantic.ValidationError, match="unknown torch.compile backend"):
        TrainingConfig(compile="turbo")
    for refused in (
        {"weighting": "upgrad"},
        {"weighting": "gradnorm"},
        {"grad_cos_rows": 8},
    ):
        with pytest.raises(pydantic.ValidationError, match="training.compile cannot"):
            TrainingConfig(compile=True, **refused)
    with pytest.raises(CompileError, match="'mgda'"):  # the library refuses it too
        _train(mf_splits, "mgda", epochs=1, compile="aot_eager")


@pytest.mark.parametrize("architecture", ["cross_stitch", "mtan", "mmoe"])
def test_soft_architectures_train_in_bf16_fp16_and_compiled(mf_splits, architecture):
    """A soft model runs whole under the loop's task outputs: autocast and
    training.compile reach every column, attention mask and expert."""
    bf16, seen = _train(
        mf_splits, epochs=1, architecture=architecture, precision="bf16"
    )
    assert seen.dtypes == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in seen.model.parameters())
    fp16, seen = _train(mf_splits, "uncertainty", epochs=1, architecture=architecture,
                        precision="fp16")  # fmt: skip
    assert seen.dtypes == {torch.float16} and fp16.scaler is not None
    plain, _ = _train(mf_splits, "uncertainty", epochs=1, architecture=architecture)
    compiled, seen = _train(mf_splits, "uncertainty", epochs=1,
                            architecture=architecture, compile="aot_eager")  # fmt: skip
    assert hasattr(seen.model.task_outputs, "_torchdynamo_orig_callable")
    assert list(compiled.model.state_dict()) == list(plain.model.state_dict())
    for state in (bf16, fp16, compiled):
        assert math.isfinite(state.history[0]["val.loss"])
    assert compiled.history[0]["val.loss"] == pytest.approx(
        plain.history[0]["val.loss"], rel=1e-3
    )
    # reduced precision: close to fp32's first epoch, not equal
    assert bf16.history[0]["val.loss"] == pytest.approx(
        _train(mf_splits, epochs=1, architecture=architecture)[0].history[0][
            "val.loss"
        ],
        rel=0.05,
    )
