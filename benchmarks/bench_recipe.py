"""Benchmark: the default recipe under a time budget, scored on PublicTest.

    .venv/bin/python benchmarks/bench_recipe.py [--time-limit 3600] [--seed 0]
        [--options '{"dropout": 0.1}'] [--data ../shared/data/fer2013.csv.gz]

Runs ``fer.train(df, time_limit=...)`` on the whole CSV: only its Training
rows train (10% of them, stratified, held out for ``val_accuracy``), and
PublicTest is scored once, at the end. ``--options`` is a JSON object of extra
``fer.train`` keywords, for trying a change to the recipe; without it this
measures the defaults. Prints one line per epoch, then PublicTest accuracy and
per-class recall without and with flip TTA, the wall time and peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import pandas as pd

import fer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join("..", "shared", "data", "fer2013.csv.gz"))
    ap.add_argument("--time-limit", type=float, default=3600.0, help="training budget in seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--options", default="{}", help="JSON object of extra fer.train keywords")
    ap.add_argument("--save", default=None, help="save the trained model here")
    args = ap.parse_args()
    options = json.loads(args.options)
    if not isinstance(options, dict):
        raise SystemExit("--options must be a JSON object")

    fer.set_num_threads(args.threads)
    df = pd.read_csv(args.data)
    test = df[df.Usage == "PublicTest"]
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {fer.get_num_threads()} threads; fer {fer.__version__}\n"
        f"fer.train(df, time_limit={args.time_limit:g}, seed={args.seed}"
        + "".join(f", {k}={v!r}" for k, v in options.items())
        + ")",
        flush=True,
    )
    def report(epoch: int, logs: dict[str, float]) -> None:
        print(
            f"epoch {epoch:3d}: {logs['seconds']:6.1f} s lr {logs['learning_rate']:.2e} "
            f"loss {logs['loss']:.4f} acc {logs['accuracy']:.4f} "
            f"val_loss {logs['val_loss']:.4f} val_acc {logs['val_accuracy']:.4f}",
            flush=True,
        )

    t0 = time.perf_counter()
    model = fer.train(
        df, time_limit=args.time_limit, seed=args.seed, progress=False, callbacks=[report], **options
    )
    wall = time.perf_counter() - t0
    print(
        f"{len(model.history)} epochs, training {model.history.seconds.sum() / 60:.1f} min "
        f"(fer.train wall time {wall / 60:.1f} min)"
    )
    for tta in (None, "flip"):
        r = model.evaluate(test, tta=tta)
        recall = ", ".join(f"{k} {v:.3f}" for k, v in r.per_class["recall"].items())
        print(f"PublicTest accuracy (tta={tta}): {r.accuracy:.4f}, macro F1 {r.macro_f1:.4f}\n  recall: {recall}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.save:
        model.save(args.save)
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()
