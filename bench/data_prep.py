"""Wall time and peak memory of data_prep on the default dataset (MultiFashion, 120,000
train + 20,000 test composites from the real Fashion-MNIST).

Runs the data_prep nodes in this process, as ``kedro run --pipelines data_prep`` does
(without writing files): compose, normalisation statistics, model input, report. Peak
memory is the process's peak resident set size (``ru_maxrss``), printed next to the
resident size after the imports and the size of what data_prep hands on.

    KEDRO_DISABLE_TELEMETRY=1 .venv/bin/python bench/data_prep.py
"""

from __future__ import annotations

import argparse
import resource
import time

from multitask_cnn.data.fashion_mnist import (
    DEBIAN_DIR,
    find_fashion_mnist,
    read_fashion_mnist,
)
from multitask_cnn.pipelines.data_prep.nodes import (
    build_model_input,
    compose_splits,
    compute_normalisation,
    report_class_balance,
)

TASKS = {"left": {"kind": "multiclass", "num_classes": 10},
         "right": {"kind": "multiclass", "num_classes": 10}}  # fmt: skip


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=120_000)
    parser.add_argument("--n-test", type=int, default=20_000)
    args = parser.parse_args()
    start_mb = peak_mb()
    timings = {}
    tick = time.perf_counter()
    fashion = read_fashion_mnist(
        find_fashion_mnist(["data/01_raw/fashion_mnist", DEBIAN_DIR])
    )
    timings["read Fashion-MNIST"] = time.perf_counter() - tick
    tick = time.perf_counter()
    raw = {"multifashion": compose_splits(fashion, {"n_train": args.n_train, "n_test": args.n_test},
                                          TASKS, {})}  # fmt: skip
    timings["compose"] = time.perf_counter() - tick
    tick = time.perf_counter()
    stats = compute_normalisation(raw)
    timings["normalisation statistics"] = time.perf_counter() - tick
    tick = time.perf_counter()
    inputs = build_model_input(raw)
    timings["model input"] = time.perf_counter() - tick
    tick = time.perf_counter()
    report_class_balance(raw, TASKS)
    timings["class balance report"] = time.perf_counter() - tick
    handed_on = sum(m["multifashion"]["images"].numel() for m in inputs) / 2**20
    for name, seconds in timings.items():
        print(f"{name:>26}: {seconds:6.2f} s")
    print(f"{'total':>26}: {sum(timings.values()):6.2f} s")
    print(f"{'resident after imports':>26}: {start_mb:8.0f} MB")
    print(f"{'peak resident':>26}: {peak_mb():8.0f} MB")
    print(f"{'model input (uint8 images)':>26}: {handed_on:8.0f} MB "
          f"({sum(len(m['multifashion']['images']) for m in inputs):,} images; "
          f"pixel mean {stats['multifashion']['mean']:.4f})")  # fmt: skip


if __name__ == "__main__":
    main()
