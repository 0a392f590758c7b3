"""Benchmark: train a model on the full FER2013 Training rows and report
per-epoch time, throughput and PublicTest accuracy.

    .venv/bin/python benchmarks/bench_train.py [--model seed3x3] [--pooling stride2] [--epochs 5]
        [--data ../shared/data/fer2013.csv.gz] [--threads N] [--save model.fer]

Validation is carved from Training (10%, stratified); PublicTest is only
scored, never trained on. Prints one line per epoch, then the test accuracy
and per-class recall, and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import pandas as pd

import fer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join("..", "shared", "data", "fer2013.csv.gz"))
    ap.add_argument("--model", default="seed3x3")
    ap.add_argument("--pooling", default="stride2", help="preset option for the seed models (stride2 or same)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N Training rows (0: all)")
    ap.add_argument("--save", default=None, help="save the trained model here")
    args = ap.parse_args()

    fer.set_num_threads(args.threads)
    t0 = time.perf_counter()
    df = pd.read_csv(args.data)
    if args.limit:
        df = pd.concat([df[df.Usage == "Training"].head(args.limit), df[df.Usage != "Training"]])
    parts = fer.split(df, validation=0.1, seed=0)
    print(
        f"data: {len(parts.train):,} train / {len(parts.validation):,} validation / {len(parts.test):,} test rows "
        f"(loaded in {time.perf_counter() - t0:.1f} s); {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, fer {fer.__version__}, {fer.get_num_threads()} threads",
        flush=True,
    )
    options = {"pooling": args.pooling} if args.model.startswith("seed") else {}
    model = fer.Model(args.model, seed=0, **options)
    print(f"model {args.model} {options}: {model.count_params():,} params, batch {args.batch_size}", flush=True)
    model.fit(
        parts.train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        optimizer=args.optimizer,
        validation_data=parts.validation,
        progress=False,
        callbacks=[
            lambda epoch, logs: print(
                f"epoch {epoch}: {logs['seconds']:.1f} s ({len(parts.train) / logs['seconds']:.1f} images/s incl. validation) "
                f"loss {logs['loss']:.4f} acc {logs['accuracy']:.4f} val_loss {logs['val_loss']:.4f} "
                f"val_acc {logs['val_accuracy']:.4f}",
                flush=True,
            )
        ],
    )
    t = time.perf_counter()
    report = model.evaluate(parts.test)
    dt = time.perf_counter() - t
    print(f"PublicTest accuracy {report.accuracy:.4f} (loss {report.loss:.4f}); predicted {len(parts.test):,} images in {dt:.1f} s")
    print("per-class recall: " + ", ".join(f"{k} {v:.3f}" for k, v in report.per_class["recall"].items()))
    print(f"total training time {model.history.seconds.sum():.0f} s")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.save:
        model.save(args.save)
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()
