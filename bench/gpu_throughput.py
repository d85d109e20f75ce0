"""The ``multitask_training`` node on an accelerator against the plainest PyTorch loop
on the same device, model, data and batch, in fp32 and in mixed precision (AMP);
then inference. Images/s and their ratios, measured side by side in one run
(target: the node >= 0.95x the plain loop's training images/s with AMP).

The node is called as ``kedro run`` calls it (bench/training_node.py explains how:
the project's effective parameters, real Fashion-MNIST model input, an active MLflow
run on a throw-away store), with ``training.device`` and ``training.precision`` set;
everything else (channels-last, cuDNN autotuning, the split on the device) is the
node's own ``auto``. The plain loop trains the same model (same seed) with the same
optimizer and batches on a pre-normalised float32 copy of the data already on the
device, under the same autocast (and a gradient scaler for fp16), channels-last when
the node uses it, and validates after each epoch. The two alternate, ``--repeats``
rounds after an untimed one (compilation, cuDNN autotuning, allocator warm-up).

Inference: the project's ``predict`` (what the evaluation pipeline runs) against a
plain ``model(x)`` loop over the test images, both on the trained model in fp32, and
the plain loop under autocast for reference.

    KEDRO_DISABLE_TELEMETRY=1 .venv/bin/python bench/gpu_throughput.py            # CUDA
    KEDRO_DISABLE_TELEMETRY=1 .venv/bin/python bench/gpu_throughput.py --device cpu \\
        --amp bf16 --n-train 2000 --repeats 1   # the same code path on the CPU (check)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import torch
import torch.nn.functional as F
from _multifashion import multifashion_inputs
from training_node import project_parameters

from multitask_cnn.config import parse_tasks
from multitask_cnn.models import build_model
from multitask_cnn.pipelines.multitask_training.nodes import train_multitask_model
from multitask_cnn.seeds import torch_seed
from multitask_cnn.training import InMemorySource, predict, task_splits
from multitask_cnn.training.precision import resolve_channels_last

TARGET = 0.95  # node / plain training images/s with AMP


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_train(model, train, val, device, *, epochs, batch_size, eval_batch_size, lr,
                seed, dtype, channels_last):  # fmt: skip
    """The plainest loop on ``device``: shuffle, slice, forward under autocast, sum of
    the tasks' cross-entropies, (scaled) backward, step; then a validation pass."""
    (x, labels), (vx, vlabels) = train, val
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    generator = torch.Generator(device=device).manual_seed(seed)
    autocast = (
        torch.autocast(device.type, dtype=dtype)
        if dtype != torch.float32
        else contextlib.nullcontext()
    )
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator, device=device)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            with autocast:
                out = model(x[index].contiguous(memory_format=memory))
                loss = sum(F.cross_entropy(out[t].float(), y[index])
                           for t, y in labels.items())  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        model.eval()
        correct = torch.zeros((), device=device)
        with torch.no_grad(), autocast:
            for start in range(0, len(vx), eval_batch_size):
                out = model(vx[start : start + eval_batch_size])
                for t, y in vlabels.items():
                    correct += (
                        out[t].argmax(1) == y[start : start + eval_batch_size]
                    ).sum()
        correct.item()  # one sync per epoch, as the node's
    return model


def plain_infer(model, x, batch_size, dtype) -> None:
    autocast = (
        torch.autocast(x.device.type, dtype=dtype)
        if dtype != torch.float32
        else contextlib.nullcontext()
    )
    model.eval()
    with torch.no_grad(), autocast:
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size])
    synchronize(x.device)


def timed(fn) -> tuple[float, object]:
    tick = time.perf_counter()
    out = fn()
    return time.perf_counter() - tick, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="local")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--amp", default="auto", help="bf16 | fp16 | auto (bf16 if the GPU has it)"
    )
    parser.add_argument("--n-train", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbone", default=None, help="default: the env's")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: the env's"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA device here: pass --device cpu to check the code path"
        )
    amp = args.amp
    if amp == "auto":
        amp = (
            "bf16"
            if device.type != "cuda" or torch.cuda.is_bf16_supported()
            else "fp16"
        )
    dtypes = {
        "fp32": torch.float32,
        amp: {"bf16": torch.bfloat16, "fp16": torch.float16}[amp],
    }

    training_override = {"epochs": args.epochs, "device": str(device),
                         "early_stopping": {"patience": args.epochs}}  # fmt: skip
    if args.batch_size:
        training_override["batch_size"] = args.batch_size
    params = project_parameters(args.env, {
        "data_prep": {"n_train": args.n_train, "n_test": 2_000},
        "training": training_override,
        "transfer": {"enabled": False},
        "model": {"backbone": args.backbone} if args.backbone else {},
    })  # fmt: skip
    specs = parse_tasks(params["tasks"])
    training, model_params = params["training"], params["model"]
    _, inputs, stats = multifashion_inputs(params["data_prep"])
    splits = [task_splits(m, stats, specs)["multifashion"] for m in inputs]
    on_device = [(s.images_at(slice(None)).to(device),
                  {t: y.to(device) for t, y in s.labels.items()}) for s in splits]  # fmt: skip
    channels_last = resolve_channels_last(training["channels_last"], device)
    n_train, n_test = len(splits[0]) * args.epochs, len(splits[2])

    def build():
        torch.manual_seed(torch_seed(training["seed"], "model_init"))
        return build_model(specs, model_params["backbone"],
                           backbone_args=model_params["backbone_args"],
                           shared_stages=model_params["shared_stages"])  # fmt: skip

    def node(precision):
        def call():
            with mlflow.start_run():
                train_multitask_model(inputs[0], inputs[1], stats, params["tasks"],
                                      model_params, training | {"precision": precision},
                                      {}, None, params["transfer"])  # fmt: skip
            synchronize(device)

        return call

    def plain(precision):
        def call():
            model = plain_train(build(), on_device[0], on_device[1], device,
                                epochs=args.epochs, batch_size=training["batch_size"],
                                eval_batch_size=training["eval_batch_size"],
                                lr=training["lr"], seed=training["seed"],
                                dtype=dtypes[precision], channels_last=channels_last)  # fmt: skip
            synchronize(device)
            return model

        return call

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device={device} ({name}) torch={torch.__version__} backbone="
          f"{model_params['backbone']} train={len(splits[0])} epochs={args.epochs} "
          f"batch={training['batch_size']} channels_last={channels_last} "
          f"repeats={args.repeats}")  # fmt: skip
    model = None
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        mlflow.set_experiment("bench")
        for precision in dtypes:
            node(precision)(), plain(precision)()  # untimed: compile, autotune, warm up
            seconds = {"node": [], "plain": []}
            for _ in range(args.repeats):
                seconds["node"].append(timed(node(precision))[0])
                spent, model = timed(plain(precision))
                seconds["plain"].append(spent)
            rate = {k: n_train / statistics.median(v) for k, v in seconds.items()}
            ratios = [
                p / n for n, p in zip(seconds["node"], seconds["plain"], strict=True)
            ]
            ratio = statistics.median(ratios)
            verdict = ""
            if precision != "fp32":
                verdict = (
                    f"; target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'}"
                )
            print(f"train {precision:5s} node {rate['node']:9.0f} images/s  plain "
                  f"{rate['plain']:9.0f} images/s  ratio node/plain {ratio:.3f} (rounds "
                  f"{[round(r, 3) for r in ratios]}){verdict}")  # fmt: skip

    # inference on the test images, the last plain-trained model, fp32 (+ plain AMP)
    test_x = on_device[2][0]
    batch = training["eval_batch_size"]
    source = InMemorySource(splits[2], batch)
    model = model.to(memory_format=torch.contiguous_format)
    (
        predict(model, source, device),
        plain_infer(model, test_x, batch, torch.float32),
    )  # warm
    rows = {"predict": [], "plain fp32": [], f"plain {amp}": []}
    for _ in range(max(3, args.repeats)):
        rows["predict"].append(timed(lambda: predict(model, source, device))[0])
        rows["plain fp32"].append(
            timed(lambda: plain_infer(model, test_x, batch, torch.float32))[0]
        )
        rows[f"plain {amp}"].append(
            timed(lambda: plain_infer(model, test_x, batch, dtypes[amp]))[0]
        )
    rate = {k: n_test / statistics.median(v) for k, v in rows.items()}
    print(
        "inference "
        + "  ".join(f"{k} {v:9.0f} images/s" for k, v in rate.items())
        + f"  ratio predict/plain fp32 {rate['predict'] / rate['plain fp32']:.3f}"
    )


if __name__ == "__main__":
    main()
