"""Writes the small stratified FER2013 sample that ships in the repo.

Run once by a maintainer (the full data is not in the repo):
    python scripts/make_sample.py ../shared/data/fer2013.csv.gz
Takes at most 1,000 rows: every class and both splits present, in proportion,
with a floor per (split, class) so the rare Disgust class still appears.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent.parent / "python" / "fer" / "data" / "fer2013_sample.csv.gz"
SIZES = {"Training": 800, "PublicTest": 200}
FLOOR = 12


def main(path: str) -> None:
    df = pd.read_csv(path)
    rng = np.random.default_rng(2013)
    parts = []
    for usage, size in SIZES.items():
        split = df[df["Usage"] == usage]
        share = split["emotion"].value_counts(normalize=True).sort_index()
        want = np.maximum(FLOOR, np.floor(share * size).astype(int))
        # Trim the largest classes so the split stays within its size.
        while want.sum() > size:
            want[want.idxmax()] -= 1
        for label, n in want.items():
            rows = split[split["emotion"] == label]
            parts.append(rows.iloc[rng.choice(len(rows), size=int(n), replace=False)])
    sample = pd.concat(parts).sort_index().reset_index(drop=True)
    assert len(sample) <= 1000
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(OUT, "wb", mtime=0) as f:
        f.write(sample.to_csv(index=False).encode())
    print(f"wrote {OUT} ({len(sample)} rows)")
    print(sample.groupby(["Usage", "emotion"]).size().unstack(fill_value=0))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/fer2013.csv.gz")
