"""The transfer study: transfer vs scratch at equal epochs, in a low-data regime.

For each backbone: pretrain once on the default source task (single Fashion-MNIST
items on the 36×36 canvas, official train images of the train pool only; the
pipeline's `pretraining` nodes), then train the multi-task model on a fraction of
MultiFashion's training set, from scratch and from the transferred weights (every
stage, and the conv stages only), at equal epochs (no early stopping), seeds 0..N-1.
Per row: per-task test accuracy of the best-val-loss epoch, and the epochs the
transferred model needs to reach the scratch model's final val accuracy (mean of the
tasks). Prints Markdown tables and writes every row (with its val curve) as JSON.

    KEDRO_DISABLE_TELEMETRY=1 .venv/bin/python bench/transfer_study.py \\
        --backbones lenet,convnet --fractions 0.02,0.1,1 --seeds 3 --epochs 8 \\
        --out bench/results/transfer_study.json

`--variants scratch,conv` runs a subset; `--tables A.json B.json` prints the tables of
earlier result files, merged.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _multifashion import TASKS, multifashion_inputs

from multitask_cnn.config import TrainingConfig
from multitask_cnn.models import build_model, get_backbone
from multitask_cnn.models.transfer import TransferMapping, transfer_weights
from multitask_cnn.pipelines.pretraining.nodes import (
    build_pretraining_data,
    pretrain_backbone,
)
from multitask_cnn.seeds import numpy_generator, torch_seed
from multitask_cnn.training import (
    InMemorySource,
    Split,
    WarmStart,
    predict,
    resolve_device,
    task_splits,
    train_model,
)


def subset(split: Split, fraction: float, seed: int) -> Split:
    if fraction >= 1:
        return split
    n = max(1, int(round(fraction * len(split))))
    rows = torch.from_numpy(
        np.sort(numpy_generator(seed, "study_subset").permutation(len(split))[:n])
    )
    return split.subset(rows)


def test_accuracy(model, test: Split, device) -> dict[str, float]:
    outputs = predict(model, InMemorySource(test, 1024), device)
    return {
        t: float((spec.task_kind.predict(outputs[t]) == test.labels[t]).float().mean())
        for t, spec in TASKS.items()
    }


def val_curve(history: list[dict]) -> list[float]:
    return [statistics.mean(h[f"val.{t}.accuracy"] for t in TASKS) for h in history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", default="lenet,convnet")
    parser.add_argument("--fractions", default="0.02,0.1,1")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument(
        "--pretrain-epochs",
        type=int,
        default=None,
        help="default: the pipeline's (training.epochs, early stopping)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/transfer_study.json")
    )
    parser.add_argument(
        "--variants",
        default="scratch,all,conv",
        help="scratch, all (every stage transferred), conv (fc left out)",
    )
    parser.add_argument(
        "--tables",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="only print the tables of earlier result files, merged",
    )
    args = parser.parse_args()
    if args.tables:  # a row measured again (same backbone, data, seed, start) replaces the earlier one
        files = [json.loads(path.read_text()) for path in args.tables]
        rows = {(r["backbone"], r["fraction"], r["seed"], r["variant"]): r
                for f in files for r in f["rows"]}  # fmt: skip
        print_tables(files[0] | {"rows": list(rows.values())})
        return
    logging.basicConfig(level=logging.WARNING)
    device = resolve_device(args.device)

    fashion, (train_input, val_input, test_input), stats = multifashion_inputs(
        {"n_test": args.n_test})  # fmt: skip
    train_all, val, test = (task_splits(m, stats, TASKS)["multifashion"]
                            for m in (train_input, val_input, test_input))  # fmt: skip
    pre_train, pre_val, pre_task = build_pretraining_data(
        fashion, train_input, val_input, None, stats, {}, {})  # fmt: skip
    default = TrainingConfig()
    budget = replace(default.budget(), epochs=args.epochs, patience=args.epochs)
    variants = {"scratch": None, "transfer (all stages)": TransferMapping(),
                "transfer (conv stages)": TransferMapping(exclude=("backbone.fc.*",))}  # fmt: skip
    chosen = dict(zip(("scratch", "all", "conv"), variants, strict=True))
    variants = {chosen[v]: variants[chosen[v]] for v in args.variants.split(",")}
    out = {"args": {k: str(v) for k, v in vars(args).items()}, "device": str(device),
           "threads": torch.get_num_threads(), "pretraining": {}, "rows": []}  # fmt: skip
    started = time.perf_counter()
    for backbone in args.backbones.split(","):
        tick = time.perf_counter()
        pretrained, _ = pretrain_backbone(
            pre_train, pre_val, pre_task, {"backbone": backbone}, default.model_dump(),
            {"training": {"epochs": args.pretrain_epochs}} if args.pretrain_epochs else {},
            None, {})  # fmt: skip
        out["pretraining"][backbone] = {
            "seconds": time.perf_counter() - tick, "epoch": pretrained["epoch"],
            "best": pretrained["best"]}  # fmt: skip
        print(f"[{time.perf_counter() - started:.0f} s] {backbone} pretrained: "
              f"{pretrained['best']} at epoch {pretrained['epoch']}", flush=True)  # fmt: skip
        for fraction in map(float, args.fractions.split(",")):
            for seed in range(args.seeds):
                train = subset(train_all, fraction, seed)
                seeded = replace(budget, seed=seed)

                def build(backbone=backbone):
                    return build_model(TASKS, backbone)

                for variant, mapping in variants.items():
                    if (
                        mapping is not None
                        and mapping.exclude
                        and "fc" not in (get_backbone(backbone).stage_names)
                    ):
                        continue  # no fc stage to leave out
                    warm = None
                    if mapping is not None:
                        torch.manual_seed(torch_seed(seed, "model_init"))
                        model = build()
                        report = transfer_weights(
                            model, pretrained["state_dict"], mapping
                        )
                        warm = WarmStart(model.state_dict(), frozenset(
                            n for n, _ in model.named_parameters() if n in report.transferred))  # fmt: skip
                    tick = time.perf_counter()
                    state = train_model(
                        build, TASKS, train, val, device, seeded, warm_start=warm
                    )
                    row = {"backbone": backbone, "fraction": fraction, "n_train": len(train),
                           "seed": seed, "variant": variant,
                           "test_accuracy": test_accuracy(state.model, test, device),
                           "best_epoch": state.best_epoch, "val_curve": val_curve(state.history),
                           "seconds": time.perf_counter() - tick}  # fmt: skip
                    out["rows"].append(row)
                    print(f"[{time.perf_counter() - started:.0f} s] {backbone} {fraction:g} "
                          f"seed {seed} {variant}: {row['test_accuracy']}", flush=True)  # fmt: skip
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(out, indent=1))
    print_tables(out)


def epochs_to_reach(curve: list[float], target: float) -> int | None:
    return next((i for i, v in enumerate(curve, start=1) if v >= target), None)


def _fmt(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return (
        f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
    )


def print_tables(out: dict) -> None:
    rows = out["rows"]
    print(f"\nepochs={out['args']['epochs']} (no early stopping), device={out['device']}, "
          f"threads={out['threads']}\n")  # fmt: skip
    print("| backbone | train composites | start | test acc. left | test acc. right "
          "| epochs to scratch's final val acc. |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    keys = sorted({(r["backbone"], r["fraction"]) for r in rows},
                  key=lambda k: (k[0] != "lenet", k[0], k[1]))  # fmt: skip
    for backbone, fraction in keys:
        group = [
            r for r in rows if (r["backbone"], r["fraction"]) == (backbone, fraction)
        ]
        scratch = {
            r["seed"]: r["val_curve"][-1] for r in group if r["variant"] == "scratch"
        }
        for variant in dict.fromkeys(r["variant"] for r in group):
            runs = [r for r in group if r["variant"] == variant]
            reach = [epochs_to_reach(r["val_curve"], scratch[r["seed"]]) for r in runs
                     if r["seed"] in scratch]  # fmt: skip
            reach_text = ", ".join("–" if e is None else str(e) for e in reach)
            print(f"| {backbone} | {runs[0]['n_train']:,} ({fraction:g}) | {variant} "
                  f"| {_fmt([r['test_accuracy']['left'] for r in runs])} "
                  f"| {_fmt([r['test_accuracy']['right'] for r in runs])} "
                  f"| {reach_text} |")  # fmt: skip


if __name__ == "__main__":
    main()
