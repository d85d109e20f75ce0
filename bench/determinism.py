"""What ``training.deterministic`` costs: the project's training loop with torch's
deterministic algorithms on and off, alternating, same model, data and batch; prints
samples/s of each and the ratio (on / off).

    KEDRO_DISABLE_TELEMETRY=1 .venv/bin/python bench/determinism.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _multifashion import TASKS, multifashion_splits

from multitask_cnn.models import build_model
from multitask_cnn.tasks import kinds_of
from multitask_cnn.training import (
    InMemorySource,
    get_weighting,
    resolve_device,
    train_one_epoch,
)
from multitask_cnn.training.determinism import set_deterministic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="lenet")
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    split, _, _ = multifashion_splits({"n_train": args.n_train, "n_test": 100}, TASKS)
    device, kinds = resolve_device(args.device), kinds_of(TASKS)
    seconds: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(args.repeats + 1):  # the first round warms up, untimed
        for mode in ("on", "off"):
            set_deterministic(mode == "on")
            torch.manual_seed(0)
            model = build_model(TASKS, args.backbone).to(device)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            if device.type == "cuda":
                torch.cuda.synchronize()
            tick = time.perf_counter()
            train_one_epoch(model, InMemorySource(split, 256, seed=0), kinds,
                            get_weighting("equal", TASKS), optimizer, device)  # fmt: skip
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[mode].append(time.perf_counter() - tick)
    set_deterministic(False)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device={device} ({name}) threads={torch.get_num_threads()} backbone={args.backbone} "
          f"n={len(split)} repeats={args.repeats}")  # fmt: skip
    rate = {m: len(split) / statistics.median(s[1:]) for m, s in seconds.items()}
    for mode, value in rate.items():
        print(f"deterministic {mode:3s} {value:8.0f} samples/s  "
              f"(rounds {[round(s, 2) for s in seconds[mode][1:]]} s)")  # fmt: skip
    print(f"ratio on/off throughput: {rate['on'] / rate['off']:.3f}")


if __name__ == "__main__":
    main()
