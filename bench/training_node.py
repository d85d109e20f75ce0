"""The whole ``multitask_training`` node against the plainest PyTorch loop doing the
same train and validation passes: images/s, and their ratio (target >= 0.97).

The node is called as ``kedro run`` calls it: with the project's effective parameters
(``conf/<env>``, defaults filled in), the model input and normalisation statistics the
``data_prep`` nodes build (in memory here, from real Fashion-MNIST), inside an active
MLflow run (a throw-away SQLite store, so per-epoch logging costs what it costs in a
run). Its time is the node call from start to checkpoint: splits checked, model built,
every epoch's training and validation pass, per-epoch logging, checkpoint and input
fingerprint. The plain loop trains the same model (same seed) with the same optimizer,
batch sizes and threads on pre-normalised float32 tensors, and validates after each
epoch (loss and accuracy). The two alternate, ``--repeats`` rounds; each prints the
median and per-round figures and the first epoch against the second. Training from
scratch (``transfer.enabled: false``: a frozen warm start would make the node's first
epochs cheaper than the loop's); no early stopping (patience = epochs).

    KEDRO_DISABLE_TELEMETRY=1 .venv/bin/python bench/training_node.py
    ... --profile  # also a torch.profiler table of one node call (where the time goes)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import torch
import torch.nn.functional as F
from _multifashion import multifashion_inputs
from kedro.config import OmegaConfigLoader

from multitask_cnn.config import effective_parameters, parse_tasks
from multitask_cnn.models import build_model
from multitask_cnn.pipelines.multitask_training.nodes import train_multitask_model
from multitask_cnn.seeds import torch_seed
from multitask_cnn.settings import CONFIG_LOADER_ARGS
from multitask_cnn.training import task_splits

TARGET = 0.97


def project_parameters(env: str, overrides: dict) -> dict:
    loader = OmegaConfigLoader("conf", env=env, **CONFIG_LOADER_ARGS)
    params = dict(loader["parameters"])
    for key, value in overrides.items():
        params[key] = {**(params.get(key) or {}), **value}
    return effective_parameters(params)


def plain_run(model, optimizer, train, val, epochs, batch_size, eval_batch_size, seed):
    """The plainest loop: per epoch, shuffle, slice, forward, sum of the tasks'
    cross-entropies, step; then a no-grad validation pass (loss, accuracy)."""
    generator = torch.Generator().manual_seed(seed)
    (x, labels), (vx, vlabels) = train, val
    epoch_seconds = []
    for _ in range(epochs):
        tick = time.perf_counter()
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            out = model(x[index])
            loss = sum(F.cross_entropy(out[t], y[index]) for t, y in labels.items())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        loss, correct = 0.0, dict.fromkeys(vlabels, 0)
        with torch.no_grad():
            for start in range(0, len(vx), eval_batch_size):
                out = model(vx[start : start + eval_batch_size])
                for t, y in vlabels.items():
                    yb = y[start : start + eval_batch_size]
                    loss += F.cross_entropy(out[t], yb, reduction="sum").item()
                    correct[t] += (out[t].argmax(1) == yb).sum().item()
        epoch_seconds.append(time.perf_counter() - tick)
    return epoch_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="local")
    parser.add_argument("--n-train", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backbone", default=None, help="default: the env's")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    model_override = {"backbone": args.backbone} if args.backbone else {}
    params = project_parameters(args.env, {
        "data_prep": {"n_train": args.n_train, "n_test": 100},
        "training": {"epochs": args.epochs, "device": "cpu",
                     "early_stopping": {"patience": args.epochs}},
        "transfer": {"enabled": False},
        "model": model_override,
    })  # fmt: skip
    specs = parse_tasks(params["tasks"])
    training, model_params = params["training"], params["model"]
    _, inputs, stats = multifashion_inputs(params["data_prep"])
    train_input, val_input, _ = inputs
    train, val = (task_splits(m, stats, specs)["multifashion"] for m in inputs[:2])
    plain_data = [(s.images_at(slice(None)), s.labels) for s in (train, val)]
    n = len(train) * args.epochs

    def node():
        return train_multitask_model(
            train_input, val_input, stats, params["tasks"], model_params, training,
            {}, None, params["transfer"],
        )  # fmt: skip

    def plain():
        torch.manual_seed(torch_seed(training["seed"], "model_init"))
        model = build_model(specs, model_params["backbone"],
                            backbone_args=model_params["backbone_args"],
                            shared_stages=model_params["shared_stages"])  # fmt: skip
        optimizer = torch.optim.Adam(model.parameters(), lr=training["lr"],
                                     weight_decay=training["weight_decay"])  # fmt: skip
        return plain_run(model, optimizer, *plain_data, args.epochs,
                         training["batch_size"], training["eval_batch_size"],
                         training["seed"])  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        mlflow.set_experiment("bench")
        # an untimed round first: the process's one-time costs (torch imports
        # torch._dynamo when it builds the first optimizer, ~2-3 s here; allocator,
        # oneDNN kernels) are paid by whichever runs first, and by any program once
        tick = time.perf_counter()
        with mlflow.start_run():
            _, history, _ = node()
        cold = [time.perf_counter() - tick, history["epoch_seconds"].tolist()]
        tick = time.perf_counter()
        cold_plain = plain()
        cold += [time.perf_counter() - tick, cold_plain]
        seconds: dict[str, list[float]] = {"node": [], "plain": []}
        epochs: dict[str, list[list[float]]] = {"node": [], "plain": []}
        for _ in range(args.repeats):
            with mlflow.start_run():
                tick = time.perf_counter()
                _, history, _ = node()
                seconds["node"].append(time.perf_counter() - tick)
            epochs["node"].append(history["epoch_seconds"].tolist())
            tick = time.perf_counter()
            epochs["plain"].append(plain())
            seconds["plain"].append(time.perf_counter() - tick)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with mlflow.start_run(), profile(activities=[ProfilerActivity.CPU]) as prof:
                node()
            print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))

    print(f"threads={torch.get_num_threads()} backbone={model_params['backbone']} "
          f"train={len(train)} val={len(val)} epochs={args.epochs} "
          f"batch={training['batch_size']} eval_batch={training['eval_batch_size']} "
          f"repeats={args.repeats}")  # fmt: skip
    rate = {k: n / statistics.median(v) for k, v in seconds.items()}
    for name, value in rate.items():
        per_epoch = [[round(s, 2) for s in r] for r in epochs[name]]
        print(f"{name:6s} {value:8.0f} images/s  (median) call s: "
              f"{[round(s, 2) for s in seconds[name]]}  epochs s: {per_epoch}")  # fmt: skip
    print("untimed first round (cold process): node {:.2f} s, epochs {}; then plain {:.2f} s, "
          "epochs {}".format(*(v if isinstance(v, float) else [round(e, 2) for e in v]
                               for v in cold)))  # fmt: skip
    ratios = [a / b for a, b in zip(seconds["plain"], seconds["node"], strict=True)]
    first_vs_second = [r[0] / r[1] for r in epochs["node"] if len(r) > 1]
    if first_vs_second:
        print(f"node epoch 1 / epoch 2 time: {[round(r, 2) for r in first_vs_second]}")
    ratio = statistics.median(ratios)  # paired: each round's node against its plain
    print(f"ratio node/plain throughput: {ratio:.3f} (median of the rounds "
          f"{[round(r, 3) for r in ratios]}; of the median rates "
          f"{rate['node'] / rate['plain']:.3f}); target >= {TARGET}: "
          f"{'met' if ratio >= TARGET else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
