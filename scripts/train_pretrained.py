"""Train the pretrained model that ships in the package (fer/data/pretrained.fer).

    .venv/bin/python scripts/train_pretrained.py [--epochs 20] [--data ../shared/data/fer2013.csv.gz]
        [--checkpoint runs/pretrained/checkpoint.fer] [--resume] [--out python/fer/data/pretrained.fer]
        [--log scripts/pretrained_log.txt]

`fer.train` with its default model and recipe, on the Training rows only
(10% of them, stratified, held out for validation); PublicTest is scored
once at the end, never trained on or used to choose anything. The model is
checkpointed after every epoch; `--resume` continues from the checkpoint
(the learning-rate schedule picks up where it stopped). Every line printed
also goes to the log file, which is committed beside this script.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

import pandas as pd

import fer


class Tee:
    def __init__(self, path: str, append: bool) -> None:
        self.file = open(path, "a" if append else "w", encoding="utf-8")

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


class Checkpoint(fer.callbacks.Callback):
    """Saves the model after every epoch and logs the epoch's metrics."""

    def __init__(self, path: str, log: Tee, train_rows: int) -> None:
        self.path, self.log, self.train_rows = path, log, train_rows
        self.model: fer.Model | None = None

    def on_train_begin(self, model: fer.Model) -> None:
        self.model = model

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.log(
            f"epoch {epoch:3d}: {logs['seconds']:6.1f} s ({self.train_rows / logs['seconds']:5.1f} img/s) "
            f"lr {logs['learning_rate']:.2e} loss {logs['loss']:.4f} acc {logs['accuracy']:.4f} "
            f"val_loss {logs['val_loss']:.4f} val_acc {logs['val_accuracy']:.4f}"
        )
        assert self.model is not None
        self.model.save(self.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join("..", "shared", "data", "fer2013.csv.gz"))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default=os.path.join("runs", "pretrained", "checkpoint.fer"))
    ap.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    ap.add_argument("--out", default=os.path.join("python", "fer", "data", "pretrained.fer"))
    ap.add_argument("--log", default=os.path.join("scripts", "pretrained_log.txt"))
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    fer.set_num_threads(args.threads)
    os.makedirs(os.path.dirname(args.checkpoint) or ".", exist_ok=True)
    log = Tee(args.log, append=args.resume)
    log(f"$ {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    log(
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {platform.platform()}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {fer.get_num_threads()} threads; fer {fer.__version__}"
    )
    df = pd.read_csv(args.data)
    parts = fer.split(df, validation=0.1, seed=args.seed)
    log(f"data: {len(parts.train):,} train / {len(parts.validation):,} validation (from Training) / {len(parts.test):,} test rows")

    checkpoint = Checkpoint(args.checkpoint, log, len(parts.train))
    start = time.perf_counter()
    if args.resume:
        model = fer.load(args.checkpoint)
        log(f"resuming from {args.checkpoint} after epoch {model.epochs_trained}")
        model = fer.train(
            df, model, epochs=args.epochs, initial_epoch=model.epochs_trained, seed=args.seed,
            progress=False, callbacks=[checkpoint],
        )
    else:
        log(f"model {fer.api.DEFAULT_MODEL}, fer.train defaults, {args.epochs} epochs, seed {args.seed}")
        model = fer.train(df, epochs=args.epochs, seed=args.seed, progress=False, callbacks=[checkpoint])
    wall = time.perf_counter() - start
    log(f"training wall time this run: {wall / 60:.1f} min; all epochs: {model.history.seconds.sum() / 60:.1f} min")

    for tta in (None, "flip", "crops"):
        t = time.perf_counter()
        report = model.evaluate(parts.test, tta=tta)
        log(
            f"PublicTest accuracy (tta={tta}): {report.accuracy:.4f}  [{len(parts.test):,} images, "
            f"{time.perf_counter() - t:.1f} s]"
        )
        log("  recall: " + ", ".join(f"{k} {v:.3f}" for k, v in report.per_class["recall"].items()))
    model.save(args.out)
    log(f"saved {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")
    log(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
