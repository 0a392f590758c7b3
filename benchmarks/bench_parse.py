"""Benchmark: fer.parse_pixels against the idiomatic numpy way.

    .venv/bin/python benchmarks/bench_parse.py [../shared/data/fer2013.csv.gz]

Loads the CSV with pandas (not timed), parses all rows' pixels both ways,
checks the arrays are equal and prints both times (best of --repeat) and
the ratio.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

import fer


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", nargs="?", default=os.path.join("..", "shared", "data", "fer2013.csv.gz"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    df = pd.read_csv(args.csv)
    print(f"{len(df):,} rows from {args.csv}; {os.cpu_count()} CPUs")
    t_np, ref = best_of(lambda: np.stack([np.array(s.split(), dtype=np.uint8) for s in df.pixels]), args.repeat)
    t_fer, ours = best_of(lambda: fer.parse_pixels(df.pixels), args.repeat)
    assert np.array_equal(ours, ref.reshape(-1, 48, 48)), "fer.parse_pixels disagrees with numpy"
    print(f"numpy  (split + np.array + np.stack): {t_np:8.3f} s")
    print(f"fer.parse_pixels                    : {t_fer:8.3f} s")
    print(f"ratio: {t_np / t_fer:.1f}x faster (arrays equal)")


if __name__ == "__main__":
    main()
