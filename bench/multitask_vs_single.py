"""One multi-task model against one model per task on MultiFashion (left, right):
parameters, training time and inference throughput, with the ratio each is for.

Same backbone, budget, data and seeds as the pipeline's comparison
(:func:`multitask_cnn.training.train_model`); the models train one after another,
``--repeats`` times alternating, and the median of each is compared. Inference
throughput: the multi-task model answers both tasks in one pass; the single-task
models each take the image (1 / Σ 1/t). Targets (two tasks): parameters ≤ 0.55,
training time ≤ 0.6, throughput ≥ 1.8.

    KEDRO_DISABLE_TELEMETRY=1 .venv/bin/python bench/multitask_vs_single.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch
from _multifashion import TASKS, multifashion_splits

from multitask_cnn.config import TrainingConfig
from multitask_cnn.evaluation import inference_speed, parameter_counts
from multitask_cnn.models import build_model
from multitask_cnn.training import train_model

TARGETS = {
    "parameters": ("<=", 0.55),
    "training time": ("<=", 0.6),
    "throughput": (">=", 1.8),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backbone", default="lenet")
    args = parser.parse_args()
    train, val, test = multifashion_splits(
        {"n_train": args.n_train, "n_test": 2000}, TASKS
    )
    budget = replace(
        TrainingConfig().budget(), epochs=args.epochs, patience=args.epochs
    )
    device = torch.device("cpu")
    models = {"multi-task": TASKS} | {
        f"single-task {t}": {t: s} for t, s in TASKS.items()
    }
    seconds: dict[str, list[float]] = {name: [] for name in models}
    trained = {}
    for _ in range(args.repeats):
        for name, specs in models.items():
            tick = time.perf_counter()
            state = train_model(lambda specs=specs: build_model(specs, args.backbone), specs,
                                train.only(specs), val.only(specs), device, budget)  # fmt: skip
            seconds[name].append(time.perf_counter() - tick)
            trained[name] = state.model
    images = test.images_at(slice(0, 1024))
    speed = {name: inference_speed(model, images, device, batch_size=1024)["throughput"]
             for name, model in trained.items()}  # fmt: skip
    single = [n for n in models if n != "multi-task"]
    costs = {
        "parameters": (parameter_counts(trained["multi-task"])["total"],
                       sum(parameter_counts(trained[n])["total"] for n in single)),
        "training time": (statistics.median(seconds["multi-task"]),
                          sum(statistics.median(seconds[n]) for n in single)),
        "throughput": (speed["multi-task"], 1 / sum(1 / speed[n] for n in single)),
    }  # fmt: skip
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; "
          f"{args.backbone}, {len(train)} train images, {args.epochs} epochs, {args.repeats} repeats")  # fmt: skip
    print(f"{'cost':>14} {'multi-task':>12} {'single-task':>12} {'ratio':>6}  target")
    for name, (multi, one_each) in costs.items():
        ratio = multi / one_each
        op, target = TARGETS[name]
        met = ratio <= target if op == "<=" else ratio >= target
        print(f"{name:>14} {multi:>12,.1f} {one_each:>12,.1f} {ratio:>6.2f}  {op} {target} "
              f"{'met' if met else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
