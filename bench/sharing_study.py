"""The sharing study: single-task models, every share depth, every strategy, seeds.

One stated budget for every row (same data subset, epochs, optimizer, batch, early
stopping); per row: test accuracy per task, Δm against the single-task models of the
same seed, seconds per training epoch and parameters (and their ratio to the
single-task models together). Prints a Markdown table and writes the rows as JSON.

    KEDRO_DISABLE_TELEMETRY=1 .venv/bin/python bench/sharing_study.py \\
        --n-train 30000 --epochs 8 --out data/08_reporting/sharing_study.json

Rows (``--plan strategies``, the default): the single-task models; `equal` at every
partial share depth; every strategy at full sharing (`equal` there is the project's
default); seeds 0..N-1 for the single-task models and the `--seeded` strategies
(mean ± std).

``--plan architectures``: the single-task models, hard sharing at every depth (0 to
all stages) and each soft-sharing architecture at its default settings
(``cross_stitch``, ``mtan``, ``mmoe``; README "Soft sharing"), all with `equal` and
``--seeds`` seeds, with MACs per image beside the parameters:

    KEDRO_DISABLE_TELEMETRY=1 .venv/bin/python bench/sharing_study.py --plan architectures \\
        --out data/08_reporting/architecture_study.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import torch
from _multifashion import TASKS, multifashion_splits

from multitask_cnn.evaluation import delta_m, macs_per_image
from multitask_cnn.models import build_model, count_parameters, get_backbone
from multitask_cnn.training import (
    WEIGHTINGS,
    Budget,
    InMemorySource,
    Split,
    predict,
    resolve_device,
    train_model,
)


def test_metrics(model, test: Split, specs, device) -> dict[str, dict[str, float]]:
    outputs = predict(model, InMemorySource(test, 1024), device)
    metrics = {}
    for task, spec in specs.items():
        y_true, y_pred = (
            test.labels[task].numpy(),
            spec.task_kind.predict(outputs[task]).numpy(),
        )
        metrics[task] = spec.task_kind.metrics(y_true, y_pred, spec)
    return metrics


def run(name, specs, build, splits, device, budget, weighting="equal") -> dict:
    train, val, test = (
        split.only(specs) for split in splits
    )  # the row's tasks' labels
    tick = time.perf_counter()
    state = train_model(build, specs, train, val, device, budget, weighting=weighting)
    seconds = [h["epoch_seconds"] for h in state.history]
    return {
        "name": name, "weighting": weighting, "seed": budget.seed,
        "metrics": test_metrics(state.model, test, specs, device),
        "parameters": count_parameters(state.model),
        "macs_per_image": macs_per_image(state.model, test.image_shape),
        "seconds_per_epoch": statistics.mean(seconds), "epochs_run": len(seconds),
        "wall_seconds": time.perf_counter() - tick,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="lenet")
    parser.add_argument(
        "--n-train", type=int, default=30000, help="composites, val included"
    )
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seeded", default="equal,uncertainty,pcgrad,upgrad")
    parser.add_argument("--strategies", default=",".join(WEIGHTINGS.names()))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--plan", choices=["strategies", "architectures"],
                        default="strategies")  # fmt: skip
    parser.add_argument("--architectures", default="cross_stitch,mtan,mmoe",
                        help="--plan architectures: the soft ones to train")  # fmt: skip
    parser.add_argument("--hard-depths", default=None,
                        help="--plan architectures: hard share depths (default: all; '' none)")  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=Path("data/08_reporting/sharing_study.json")
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    splits = multifashion_splits(
        {"n_train": args.n_train, "n_test": args.n_test}, TASKS
    )
    device = resolve_device(args.device)
    depth = len(get_backbone(args.backbone).stage_names)
    seeded = args.seeded.split(",")

    def budget(seed: int) -> Budget:
        return Budget(epochs=args.epochs, batch_size=256, eval_batch_size=1024,
                      optimizer="adam", lr=1e-3, weight_decay=0.0, momentum=0.9,
                      patience=3, min_delta=0.0, seed=seed)  # fmt: skip

    plan = []  # (name, specs, shared_stages, weighting, seed, architecture)
    for seed in range(args.seeds):
        plan += [
            (f"single-task {t}", {t: TASKS[t]}, None, "equal", seed, "hard")
            for t in TASKS
        ]
    if args.plan == "architectures":
        seeds = range(args.seeds)
        depths = (range(depth + 1) if args.hard_depths is None
                  else [int(k) for k in args.hard_depths.split(",") if k])  # fmt: skip
        plan += [(f"hard, shared_stages={k}", TASKS, k, "equal", s, "hard")
                 for k in depths for s in seeds]  # fmt: skip
        plan += [(a, TASKS, None, "equal", s, a)
                 for a in args.architectures.split(",") if a for s in seeds]  # fmt: skip
    else:
        plan += [(f"equal, shared_stages={k}", TASKS, k, "equal", 0, "hard")
                 for k in range(depth)]  # fmt: skip
        plan += [(w, TASKS, None, w, 0, "hard") for w in args.strategies.split(",")]
        plan += [
            (w, TASKS, None, w, s, "hard") for w in seeded for s in range(1, args.seeds)
        ]
    rows = []
    started = time.perf_counter()
    for i, (name, specs, shared, weighting, seed, architecture) in enumerate(
        plan, start=1
    ):

        def build(specs=specs, shared=shared, architecture=architecture):
            return build_model(specs, args.backbone, shared_stages=shared,
                               architecture=architecture)  # fmt: skip

        row = run(name, specs, build, splits, device, budget(seed), weighting)
        rows.append(row)
        print(f"[{i}/{len(plan)}, {time.perf_counter() - started:.0f} s] {name} seed {seed}: "
              f"{ {t: round(m['accuracy'], 4) for t, m in row['metrics'].items()} }", flush=True)  # fmt: skip

    single = {(r["seed"], t): r for r in rows if r["name"].startswith("single-task")
              for t in r["metrics"]}  # fmt: skip
    stl_params = sum(single[0, t]["parameters"] for t in TASKS)
    stl_macs = sum(single[0, t]["macs_per_image"] for t in TASKS)
    for row in rows:
        if row["name"].startswith("single-task"):
            continue
        baseline = {t: single[row["seed"], t]["metrics"][t] for t in TASKS}
        row["delta_m"], _ = delta_m(row["metrics"], baseline, {})
        row["param_ratio"] = row["parameters"] / stl_params
        row["macs_ratio"] = row["macs_per_image"] / stl_macs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                    "device": str(device), "threads": torch.get_num_threads(),
                                    "rows": rows}, indent=2))  # fmt: skip
    print_table(rows, args, device)


def _fmt(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return (
        f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
    )


def print_table(rows: list[dict], args, device) -> None:
    print(f"\nbackbone={args.backbone} n_train={args.n_train} (val 10%) n_test={args.n_test} "
          f"epochs={args.epochs} (patience 3) batch=256 adam lr=1e-3 device={device} "
          f"threads={torch.get_num_threads()}\n")  # fmt: skip
    macs = args.plan == "architectures"
    print(
        "| model | seeds | test acc. left | test acc. right | Δm (%) | s / epoch | parameters (× single-task) |"
        + (" MACs per image (× single-task) |" if macs else "")
    )
    print("|---|---|---|---|---|---|---|" + ("---|" if macs else ""))
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["name"], []).append(row)
    for name, group in groups.items():
        acc = {
            t: [r["metrics"][t]["accuracy"] for r in group if t in r["metrics"]]
            for t in TASKS
        }
        delta = [r["delta_m"] for r in group if "delta_m" in r]
        ratio = group[0].get("param_ratio")
        print(f"| {name} | {len(group)} | {_fmt(acc['left'], 4) if acc['left'] else '–'} "
              f"| {_fmt(acc['right'], 4) if acc['right'] else '–'} "
              f"| {_fmt(delta, 2) if delta else '–'} "
              f"| {_fmt([r['seconds_per_epoch'] for r in group], 1)} "
              f"| {group[0]['parameters']:,}" + (f" ({ratio:.2f}×)" if ratio else "") + " |"
              + (f" {group[0]['macs_per_image']:,}" + (f" ({group[0]['macs_ratio']:.2f}×)"
                 if ratio else "") + " |" if macs else ""))  # fmt: skip


if __name__ == "__main__":
    main()
