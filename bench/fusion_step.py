"""Task fusion: one fused forward pass per step against one forward pass per source,
and manifest decoding against a plain Pillow loop.

1. Training step time (forward, backward, optimizer step) of the multi-task LeNet on
   MultiFashion (left, right) and scikit-learn's digits (digit): the fused step
   concatenates one batch per source and runs the shared stages once
   (:func:`multitask_cnn.training.fuse`, what ``FusedSource`` feeds the loop); the
   per-source step runs the model once per source's batch, sums the same losses and
   back-propagates once. Same model, same batches; the two alternate ``--repeats``
   times and the median step time of each is printed with their ratio.
2. Manifest decoding: images/s of :func:`multitask_cnn.data.manifest.decode_images`
   (worker processes) against a plain loop of ``PIL.Image.open(...).convert(...).resize``
   over the same files (the sample manifest of scripts/make_sample_manifest.py, each
   file listed ``--copies`` times).
3. Training images/s on those images held in memory against the same images read
   batch by batch from a memory-mapped uint8 cache (the path a manifest larger than
   ``data_prep.manifest.memory_budget_mb`` takes).

    KEDRO_DISABLE_TELEMETRY=1 .venv/bin/python bench/fusion_step.py
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from multitask_cnn.config import parse_tasks
from multitask_cnn.data.fashion_mnist import (
    DEBIAN_DIR,
    find_fashion_mnist,
    read_fashion_mnist,
)
from multitask_cnn.data.manifest import decode_images
from multitask_cnn.io import DigitsDataset
from multitask_cnn.models import build_model
from multitask_cnn.pipelines.data_prep.nodes import (
    build_model_input,
    compose_splits,
    compute_normalisation,
    prepare_digits,
)
from multitask_cnn.tasks import kinds_of
from multitask_cnn.training import (
    InMemorySource,
    Split,
    fuse,
    get_weighting,
    task_splits,
    train_one_epoch,
)

TASKS = parse_tasks({
    "left": {"kind": "multiclass", "num_classes": 10},
    "right": {"kind": "multiclass", "num_classes": 10},
    "digit": {"kind": "multiclass", "num_classes": 10, "source": "digits"},
})  # fmt: skip


def step(model, optimizer, batches, fused: bool) -> None:
    optimizer.zero_grad(set_to_none=True)
    parts = [fuse(batches)] if fused else batches
    loss = 0.0
    for batch in parts:
        outputs = model(batch.images, batch.rows)
        for task, out in outputs.items():
            loss = loss + TASKS[task].task_kind.loss(out, batch.labels[task])
    loss.backward()
    optimizer.step()


def time_steps(model, batches_list, fused: bool) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    step(model, optimizer, batches_list[0], fused)  # warm-up
    tick = time.perf_counter()
    for batches in batches_list:
        step(model, optimizer, batches, fused)
    return (time.perf_counter() - tick) / len(batches_list)


def fusion_figures(batch_sizes: list[int], steps: int, repeats: int) -> None:
    fashion = read_fashion_mnist(
        find_fashion_mnist(["data/01_raw/fashion_mnist", DEBIAN_DIR])
    )
    digits = {"digit": TASKS["digit"].model_dump()}
    raw = {"multifashion": compose_splits(fashion, {"n_train": 10_000, "n_test": 100}),
           "digits": prepare_digits(DigitsDataset().load(), {}, digits, {})}  # fmt: skip
    train = build_model_input(raw)[0]
    splits = task_splits(train, compute_normalisation(raw), TASKS, "train")
    torch.manual_seed(0)
    base = build_model(TASKS, "lenet")
    print(f"{'batch/source':>12} {'fused ms':>9} {'per-source ms':>14} {'ratio':>6}")
    for size in batch_sizes:
        generator = torch.Generator().manual_seed(size)
        batches_list = [
            [split.batch(torch.randint(len(split), (size,), generator=generator))
             for split in splits.values()]
            for _ in range(steps)
        ]  # fmt: skip
        fused, separate = [], []
        for _ in range(repeats):
            fused.append(time_steps(copy.deepcopy(base).train(), batches_list, True))
            separate.append(
                time_steps(copy.deepcopy(base).train(), batches_list, False)
            )
        f, s = statistics.median(fused) * 1e3, statistics.median(separate) * 1e3
        print(f"{size:>12} {f:>9.2f} {s:>14.2f} {s / f:>6.2f}")


def decoding_figures(manifest: Path, workers: int, repeats: int) -> None:
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    paths = [manifest.parent / p for p in table["image"]]

    def plain() -> None:
        for path in paths:
            with Image.open(path) as image:
                np.asarray(
                    image.convert("L").resize((36, 36), Image.Resampling.BILINEAR)
                )

    timings = {"plain Pillow loop": [], f"decode_images ({workers} processes)": []}
    for _ in range(repeats):
        tick = time.perf_counter()
        plain()
        timings["plain Pillow loop"].append(time.perf_counter() - tick)
        tick = time.perf_counter()
        decode_images(paths, 1, 36, workers=workers)
        timings[f"decode_images ({workers} processes)"].append(
            time.perf_counter() - tick
        )
    rates = {k: len(paths) / statistics.median(v) for k, v in timings.items()}
    for name, rate in rates.items():
        print(f"{name:>28}: {rate:>8.0f} images/s")
    values = list(rates.values())
    print(f"{'ratio':>28}: {values[1] / values[0]:>8.2f}")


def streaming_figures(manifest: Path, cache: Path, repeats: int, epochs: int) -> None:
    """Training images/s of one model on the manifest's images held in memory against
    the same images read batch by batch from the memory-mapped cache."""
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    paths = [manifest.parent / p for p in table["image"]]
    images = decode_images(paths, 1, 36, workers=os.cpu_count() or 1)
    np.save(cache, images)
    labels = {
        "digit": torch.from_numpy(np.random.default_rng(0).integers(0, 10, len(paths)))
    }
    specs = parse_tasks(
        {"digit": {"kind": "multiclass", "num_classes": 10, "source": "digits"}}
    )
    splits = {"in memory": Split(torch.from_numpy(images), labels, 0.1, 0.3),
              "memory-mapped cache": Split(np.load(cache, mmap_mode="r"), labels, 0.1, 0.3)}  # fmt: skip
    timings = {name: [] for name in splits}
    for _ in range(repeats):
        for name, split in splits.items():
            torch.manual_seed(0)
            model = build_model(specs, "lenet")
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            source = InMemorySource(split, 256, seed=0)
            tick = time.perf_counter()
            for _ in range(epochs):
                train_one_epoch(model, source, kinds_of(specs), get_weighting("equal", specs),
                                optimizer, torch.device("cpu"))  # fmt: skip
            timings[name].append(time.perf_counter() - tick)
    rates = {k: epochs * len(paths) / statistics.median(v) for k, v in timings.items()}
    for name, rate in rates.items():
        print(f"{name:>28}: {rate:>8.0f} training images/s")
    values = list(rates.values())
    print(f"{'ratio (cache / memory)':>28}: {values[1] / values[0]:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 256])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--copies", type=int, default=6, help="manifest rows per image file"
    )
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    fusion_figures(args.batch_sizes, args.steps, args.repeats)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_sample_manifest import write_sample

    with tempfile.TemporaryDirectory() as folder:
        write_sample(Path(folder), 1797, 0.3, 0)
        manifest = Path(folder) / "manifest.csv"
        table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        pd.concat([table] * args.copies).to_csv(manifest, index=False)  # more rows
        print(
            f"manifest: {len(table) * args.copies} rows ({len(table)} files x {args.copies})"
        )
        decoding_figures(manifest, args.workers, args.repeats)
        streaming_figures(manifest, Path(folder) / "cache.npy", args.repeats, epochs=2)


if __name__ == "__main__":
    main()
