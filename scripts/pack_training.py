"""Pack FER2013's Training rows into a small file for a machine without ../shared.

    .venv/bin/python scripts/pack_training.py [--data ../shared/data/fer2013.csv.gz] [--out runs/training.fer.xz]

The CSV (87 MB gzipped) is too big to send to a remote trainer as it is. This
keeps only the Training rows (in file order, so `fer.split`'s stratified
validation draw picks the same rows) and stores each pixel as its residual
from the LOCO-I median predictor, LZMA-compressed: about 50 MB, lossless.
`train_pretrained.py --data file.fer.xz` reads it back with `unpack`.
"""

from __future__ import annotations

import argparse
import lzma
import os

import numpy as np

MAGIC = b"FERPACK1"
SIDE = 48


def _med(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """LOCO-I median predictor from the left (a), upper (b) and upper-left (c) pixels."""
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    return np.where(c >= hi, lo, np.where(c <= lo, hi, a + b - c))


def _median_prediction(x: np.ndarray) -> np.ndarray:
    a = np.zeros_like(x)
    b = np.zeros_like(x)
    c = np.zeros_like(x)
    a[:, :, 1:] = x[:, :, :-1]
    a[:, 1:, 0] = x[:, :-1, 0]
    b[:, 1:, :] = x[:, :-1, :]
    c[:, 1:, 1:] = x[:, :-1, :-1]
    return _med(a, b, c)


def pack(images: np.ndarray, labels: np.ndarray) -> bytes:
    x = images.reshape(-1, SIDE, SIDE).astype(np.int16)
    residual = ((x - _median_prediction(x)) % 256).astype(np.uint8)
    n = np.array([len(x)], dtype="<u4").tobytes()
    return MAGIC + n + lzma.compress(labels.astype(np.uint8).tobytes() + residual.tobytes(), preset=6)


def unpack(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(images uint8 (n, 48, 48), labels uint8 (n,))``."""
    if blob[:8] != MAGIC:
        raise ValueError("not a file written by scripts/pack_training.py")
    n = int(np.frombuffer(blob[8:12], dtype="<u4")[0])
    raw = np.frombuffer(lzma.decompress(blob[12:]), dtype=np.uint8)
    labels, residual = raw[:n].copy(), raw[n:].reshape(n, SIDE, SIDE).astype(np.int16)
    # The predictor reads decoded neighbours, so decode in raster order,
    # all images at once.
    x = np.zeros((n, SIDE, SIDE), dtype=np.int16)
    for i in range(SIDE):
        for j in range(SIDE):
            a = x[:, i, j - 1] if j else (x[:, i - 1, 0] if i else 0)
            b = x[:, i - 1, j] if i else 0
            c = x[:, i - 1, j - 1] if i and j else 0
            a, b, c = (np.broadcast_to(np.asarray(v, dtype=np.int16), (n,)) for v in (a, b, c))
            x[:, i, j] = (residual[:, i, j] + _med(a, b, c)) % 256
    return x.astype(np.uint8), labels


def main() -> None:
    import pandas as pd

    import fer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join("..", "shared", "data", "fer2013.csv.gz"))
    ap.add_argument("--out", default=os.path.join("runs", "training.fer.xz"))
    args = ap.parse_args()
    df = pd.read_csv(args.data)
    train = df[df["Usage"] == "Training"]
    images = fer.parse_pixels(train["pixels"])
    labels = train["emotion"].to_numpy()
    blob = pack(images, labels)
    back, back_labels = unpack(blob)
    if not (np.array_equal(back, images) and np.array_equal(back_labels, labels)):
        raise SystemExit("round trip failed")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(blob)
    print(f"{len(train):,} Training rows -> {args.out} ({len(blob) / 1e6:.1f} MB), round trip checked")


if __name__ == "__main__":
    main()
