"""Write a small sample image manifest from scikit-learn's bundled digits (no download).

The folder it writes is what your own data should look like (README "Your own images"):

    data/01_raw/manifest/
      manifest.csv          image,split,digit,parity,ink
      images/00000.png      grey PNGs, and some RGB JPEGs (converted to grey on read)

Three label columns, one per task kind, each with about 30 % empty cells (no label):
``digit`` (text classes "zero".."nine": multiclass), ``parity`` ("even" / "odd":
binary) and ``ink`` (the share of inked pixels, a real number: regression). The
``split`` column fixes train / val / test; drop it to let data_prep split by seeded
fractions instead.

    .venv/bin/python scripts/make_sample_manifest.py [--out data/01_raw/manifest] [--n 1797]
    .venv/bin/kedro run --env manifest_example
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits

logger = logging.getLogger("make_sample_manifest")

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_sample(out: Path, n: int, missing: float, seed: int) -> pd.DataFrame:
    digits = load_digits()
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(digits.images))[:n]
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for k, i in enumerate(rows):
        pixels = (digits.images[i] * (255 / 16)).round().astype(np.uint8)  # 8x8
        image = Image.fromarray(pixels, mode="L").resize(
            (32, 32), Image.Resampling.BILINEAR
        )
        if k % 4 == 3:  # some colour JPEGs: the manifest reader converts them to grey
            name = f"images/{k:05d}.jpg"
            image.convert("RGB").save(out / name, quality=95)
        else:
            name = f"images/{k:05d}.png"
            image.save(out / name)
        label = int(digits.target[i])
        records.append({
            "image": name,
            "split": rng.choice(["train", "val", "test"], p=[0.7, 0.1, 0.2]),
            "digit": NAMES[label],
            "parity": "odd" if label % 2 else "even",
            "ink": f"{float((pixels > 0).mean()):.4f}",
        })  # fmt: skip
    table = pd.DataFrame(records)
    for column in ("digit", "parity", "ink"):  # no label for this task on these rows
        hide = rng.random(len(table)) < missing
        table.loc[hide, column] = ""
    table.to_csv(out / "manifest.csv", index=False)
    return table


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/01_raw/manifest"))
    parser.add_argument("--n", type=int, default=1797, help="images (at most 1797)")
    parser.add_argument(
        "--missing", type=float, default=0.3, help="share of empty label cells"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = write_sample(args.out, args.n, args.missing, args.seed)
    logger.info(
        "Wrote %s: %d images; labelled per column: %s", args.out / "manifest.csv", len(table),
        {c: int((table[c] != "").sum()) for c in ("digit", "parity", "ink")},
    )  # fmt: skip


if __name__ == "__main__":
    main()
