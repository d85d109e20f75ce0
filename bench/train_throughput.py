"""Training throughput of the project's loop vs the plainest PyTorch loop.

Same model (the multi-task LeNet or convnet), same real MultiFashion tensors, same
batch size and optimizer; the two loops alternate, repeats times each, and the script
prints samples/s per loop and their ratio (project / plain; 1.00 = no overhead).
Ratios from one run are what to compare on a shared, noisy machine.

    KEDRO_DISABLE_TELEMETRY=1 .venv/bin/python bench/train_throughput.py --n-train 20000
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from _multifashion import TASKS, multifashion_splits

from multitask_cnn.models import build_model
from multitask_cnn.tasks import kinds_of
from multitask_cnn.training import (
    InMemorySource,
    get_weighting,
    resolve_device,
    train_one_epoch,
)


def plain_epoch(model, images, left, right, optimizer, device, batch_size, generator):
    """The plainest loop: shuffle, slice, forward, sum of cross-entropies, step."""
    model.train()
    order = torch.randperm(len(images), generator=generator)
    for start in range(0, len(images), batch_size):
        index = order[start : start + batch_size]
        x = images[index].to(device)
        out = model(x)
        loss = F.cross_entropy(out["left"], left[index].to(device)) + F.cross_entropy(
            out["right"], right[index].to(device)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="lenet")
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    data_prep = {"n_train": args.n_train, "n_test": 100, "val_fraction": 0.01}
    split, _, _ = multifashion_splits(data_prep, TASKS)
    images = split.images_at(slice(None))  # the plain loop gets normalised float32
    device = resolve_device(args.device)
    kinds = kinds_of(TASKS)

    def fresh():
        torch.manual_seed(0)
        model = build_model(TASKS, args.backbone).to(device)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = {"project": [], "plain": []}
    for _ in range(args.repeats):
        for name in ("project", "plain"):
            model, optimizer = fresh()
            generator = torch.Generator().manual_seed(0)
            sync()
            tick = time.perf_counter()
            if name == "project":
                source = InMemorySource(
                    split, args.batch_size, seed=0
                )  # same order as plain
                train_one_epoch(model, source, kinds, get_weighting("equal", TASKS), optimizer,
                                device)  # fmt: skip
            else:
                plain_epoch(model, images, split.labels["left"], split.labels["right"],
                            optimizer, device, args.batch_size, generator)  # fmt: skip
            sync()
            times[name].append(time.perf_counter() - tick)

    n = len(split)
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'})"
          f" threads={torch.get_num_threads()} backbone={args.backbone} n={n} "
          f"batch={args.batch_size} repeats={args.repeats}")  # fmt: skip
    for name, value in rate.items():
        print(
            f"{name:8s} {value:10.0f} samples/s  (median of {np.round(times[name], 2).tolist()} s)"
        )
    print(f"ratio project/plain throughput: {rate['project'] / rate['plain']:.3f}")


if __name__ == "__main__":
    main()
