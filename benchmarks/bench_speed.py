"""Benchmark: training and inference speed of the study's models and the
default model, in images/second, with achieved GFLOP/s against a float32
GEMM peak measured in the same run, and peak memory.

    .venv/bin/python benchmarks/bench_speed.py [--models seed3x3:stride2,seed3x3:same,...]
        [--batch 64] [--batches 6] [--repeats 3] [--threads N] [--compare [--processes 3]]

Training: steady state after two warm-up batches, median over repeats of
`--batches` batches on synthetic 48x48 images (speed does not depend on the
pixel values). Inference: `predict_proba` on 1,024 images, batch 256.
With --compare, and when `tensorflow`/`keras` or `torch` is importable, the
same architectures are built there and timed side by side (Keras through
`model.fit`/`model.predict`, as a notebook would). fer, Keras and torch
then each run in `--processes` fresh interpreters (default 3), in rounds
of one of each, so that all three meet the VM's drifting speed alike: the
ratios use the medians, and every process's numbers are printed below the
row. One Keras process on this 2-core VM ran at about 147 or about 245
img/s on the same model, minutes apart, and fer's inference at 1,000 or
1,650 img/s, so a single process's ratio says little. Neither is a dependency:
run it with an interpreter that has them and fer on its path, e.g.
`PYTHONPATH=python /path/to/tf-venv/bin/python benchmarks/bench_speed.py --compare`.
Not a test: it prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

import fer
from fer import _core

DEFAULT_MODELS = "seed3x3:stride2,seed4x4:stride2,seed3x3:same,seed4x4:same,fer_vgg:"


def forward_flops(spec: dict) -> float:
    """Multiply-adds x2 of the convolutions and dense layers, per image."""
    c, h, w = spec["input_shape"]
    flops = 0.0
    for layer in spec["layers"]:
        kind = layer["type"]
        if kind == "conv2d":
            k, s, f = layer["kernel"], layer.get("stride", 1), layer["filters"]
            pad = layer.get("padding", "valid")
            if pad == "same":
                oh, ow = -(-h // s), -(-w // s)
            else:
                p = 0 if pad == "valid" else int(pad)
                oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            flops += 2.0 * oh * ow * f * c * k * k
            c, h, w = f, oh, ow
        elif kind == "max_pool2d":
            k, s = layer.get("kernel", 2), layer.get("stride", 2)
            if layer.get("padding", "valid") == "same":
                h, w = -(-h // s), -(-w // s)
            else:
                h, w = (h - k) // s + 1, (w - k) // s + 1
        elif kind == "global_avg_pool":
            h = w = 1
        elif kind == "flatten":
            c, h, w = c * h * w, 1, 1
        elif kind == "dense":
            flops += 2.0 * c * h * w * layer["units"]
            c, h, w = layer["units"], 1, 1
    return flops


def cpu_name() -> str:
    """The CPU model (timings only compare on the same one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gemm_peak(n: int = 2048, repeats: int = 5) -> float:
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def time_fer(preset: str, options: dict, batch: int, batches: int, repeats: int) -> tuple[float, float, dict]:
    model = fer.Model(preset, seed=0, **options)
    native = model._native
    rng = np.random.default_rng(0)
    n = batch * (batches * repeats + 2)
    x = rng.random((n, 2304), dtype=np.float32)
    y = rng.integers(0, 7, n).astype(np.uint8)
    native.begin_fit(
        x, y, batch_size=batch, optimizer="adam", learning_rate=1e-3, weight_decay=0.0,
        momentum=0.9, nesterov=True, label_smoothing=0.0, class_weights=None, seed=0,
    )
    native.start_epoch()
    for _ in range(2):
        native.train_batch()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(batches):
            native.train_batch()
        rates.append(batch * batches / (time.perf_counter() - t))
    native.end_fit()
    xi = x[:1024]
    model.predict_proba(xi[:256])
    infer = []
    for _ in range(repeats):
        t = time.perf_counter()
        native.predict_proba(xi, 256)
        infer.append(len(xi) / (time.perf_counter() - t))
    return statistics.median(rates), statistics.median(infer), model.spec


def parse_item(item: str) -> tuple[str, dict]:
    """`preset:pooling` (the pooling may be empty) -> (preset, options)."""
    preset, _, pooling = item.partition(":")
    return preset, {"pooling": pooling} if pooling else {}


def time_fer_item(item: str, batch: int, batches: int, repeats: int) -> tuple[float, float, float]:
    """[`time_fer`] for a `preset:pooling` item, with this process's peak RSS
    (MiB): what `--compare` runs in each fresh interpreter."""
    train, infer, _ = time_fer(*parse_item(item), batch, batches, repeats)
    return train, infer, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def torch_model(spec: dict):
    import torch
    from torch import nn

    layers, c, h, w = [], *spec["input_shape"]
    for layer in spec["layers"]:
        kind = layer["type"]
        if kind == "conv2d":
            k, s = layer["kernel"], layer.get("stride", 1)
            pad = layer.get("padding", "valid")
            if pad == "same" and s == 1:
                total = k - 1
                layers.append(nn.ZeroPad2d((total // 2, total - total // 2, total // 2, total - total // 2)))
            layers.append(nn.Conv2d(c, layer["filters"], k, s, bias=layer.get("use_bias", True)))
            c = layer["filters"]
            if layer.get("activation") == "relu":
                layers.append(nn.ReLU())
        elif kind == "max_pool2d":
            k, s = layer.get("kernel", 2), layer.get("stride", 2)
            if layer.get("padding", "valid") == "same":
                layers.append(nn.ConstantPad2d((0, k - 1, 0, k - 1), float("-inf")) if s == 1 else nn.Identity())
            layers.append(nn.MaxPool2d(k, s))
        elif kind == "dropout":
            layers.append(nn.Dropout(layer["rate"]))
        elif kind == "batch_norm2d":
            layers.append(nn.BatchNorm2d(c))
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "global_avg_pool":
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        elif kind == "flatten":
            layers.append(nn.Flatten())
        elif kind == "dense":
            layers.append(nn.LazyLinear(layer["units"]))
    return nn.Sequential(*layers), torch


def time_torch(spec: dict, batch: int, batches: int, repeats: int) -> tuple[float, float]:
    net, torch = torch_model(spec)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    x = torch.rand(batch, 1, 48, 48)
    y = torch.randint(0, 7, (batch,))
    net(x)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()

    for _ in range(2):
        step()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(batches):
            step()
        rates.append(batch * batches / (time.perf_counter() - t))
    net.eval()
    xi = torch.rand(1024, 1, 48, 48)
    infer = []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            for i in range(0, 1024, 256):
                net(xi[i : i + 256])
            infer.append(1024 / (time.perf_counter() - t))
    return statistics.median(rates), statistics.median(infer)


def keras_model(spec: dict):
    import keras
    from keras import layers as kl

    model = keras.Sequential([keras.Input(shape=(48, 48, 1))])
    for layer in spec["layers"]:
        kind = layer["type"]
        if kind == "conv2d":
            model.add(kl.Conv2D(
                layer["filters"], layer["kernel"], strides=layer.get("stride", 1),
                padding="same" if layer.get("padding", "valid") == "same" else "valid",
                activation=layer.get("activation") if layer.get("activation") == "relu" else None,
                use_bias=layer.get("use_bias", True),
            ))
        elif kind == "max_pool2d":
            model.add(kl.MaxPooling2D(layer.get("kernel", 2), layer.get("stride", 2), padding=layer.get("padding", "valid")))
        elif kind == "dropout":
            model.add(kl.Dropout(layer["rate"]))
        elif kind == "batch_norm2d":
            model.add(kl.BatchNormalization())
        elif kind == "relu":
            model.add(kl.ReLU())
        elif kind == "global_avg_pool":
            model.add(kl.GlobalAveragePooling2D())
        elif kind == "flatten":
            model.add(kl.Flatten())
        elif kind == "dense":
            model.add(kl.Dense(layer["units"], activation="softmax"))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


def time_keras(spec: dict, batch: int, batches: int, repeats: int) -> tuple[float, float]:
    """`model.fit` and `model.predict` as a notebook calls them, steady state."""
    model = keras_model(spec)
    rng = np.random.default_rng(0)
    x = rng.random((batch * batches, 48, 48, 1), dtype=np.float32)
    y = rng.integers(0, 7, len(x))
    model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, epochs=1, verbose=0)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
        rates.append(len(x) / (time.perf_counter() - t))
    xi = rng.random((1024, 48, 48, 1), dtype=np.float32)
    model.predict(xi[:256], batch_size=256, verbose=0)
    infer = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.predict(xi, batch_size=256, verbose=0)
        infer.append(len(xi) / (time.perf_counter() - t))
    return statistics.median(rates), statistics.median(infer)


def in_subprocess(call: str, args: argparse.Namespace, fer_process: bool = False) -> tuple[float, ...] | None:
    """Runs `bench_speed.<call>` in a fresh interpreter and returns its
    numbers (None where the framework is not importable). Keras and torch
    run without fer's malloc tuning (importing fer sets one arena for the
    process, which must not slow the other framework)."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "import bench_speed as b\n"
        "try:\n"
        f"    print(json.dumps(b.{call}))\n"
        "except ImportError:\n"
        "    print('null')\n"
    )
    # The same thread count as fer's, so that the columns compare like with like.
    threads = str(fer.get_num_threads())
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS=threads, TF_NUM_INTRAOP_THREADS=threads)
    if fer_process:
        env["RAYON_NUM_THREADS"] = threads
    else:
        env["FER_NO_MALLOPT"] = "1"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return None if result is None else tuple(float(r) for r in result)


def spec_call(name: str, spec: dict, args: argparse.Namespace) -> str:
    return f"time_{name}(json.loads({json.dumps(json.dumps(spec))}), {args.batch}, {args.batches}, {args.repeats})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated preset:pooling")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--compare", action="store_true", help="also time Keras/TensorFlow and torch where importable")
    ap.add_argument("--processes", type=int, default=3,
                    help="fresh interpreters per framework and model with --compare (their median is compared)")
    args = ap.parse_args()
    if args.processes < 1:
        ap.error(f"--processes must be at least 1, got {args.processes}")

    fer.set_num_threads(args.threads)
    peak = gemm_peak()
    print(f"fer {fer.__version__}, {fer.get_num_threads()} threads on {cpu_name()} ({os.cpu_count()} CPUs); "
          f"numpy float32 GEMM 2048^3: {peak:.0f} GFLOP/s (median)")
    header = f"{'model':<20}{'train img/s':>12}{'train GFLOP/s':>15}{'% GEMM':>8}{'predict img/s':>15}"
    if args.compare:
        header += f"{'keras train':>13}{'keras pred':>12}{'train x':>9}{'pred x':>8}"
        header += f"{'torch train':>13}{'torch pred':>12}{'train x':>9}{'pred x':>8}"
    print(header)
    peak_rss = 0.0
    for item in args.models.split(","):
        preset, options = parse_item(item)
        spreads = []
        if not args.compare:
            train, infer, spec = time_fer(preset, options, args.batch, args.batches, args.repeats)
            peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        else:
            spec = fer.Model(preset, **options).spec
            # Rounds of fer, Keras, torch, each in a fresh interpreter, so
            # that all three meet this VM's drifting speed alike.
            runs: dict[str, list | None] = {"fer": [], "keras": [], "torch": []}
            for _ in range(args.processes):
                fer_call = f"time_fer_item({item!r}, {args.batch}, {args.batches}, {args.repeats})"
                runs["fer"].append(in_subprocess(fer_call, args, fer_process=True))
                for name in ("keras", "torch"):
                    if runs[name] is not None:
                        result = in_subprocess(spec_call(name, spec, args), args)
                        runs[name] = None if result is None else runs[name] + [result]
            train = statistics.median(r[0] for r in runs["fer"])
            infer = statistics.median(r[1] for r in runs["fer"])
            peak_rss = max([peak_rss] + [r[2] for r in runs["fer"]])
        gflops = 3 * forward_flops(spec) * train / 1e9
        line = f"{item:<20}{train:>12.1f}{gflops:>15.1f}{100 * gflops / peak:>7.0f}%{infer:>15.1f}"
        if args.compare:
            for name in ("fer", "keras", "torch"):
                results = runs[name]
                if results is None:
                    line += f"{'(no ' + name + ')':>13}{'':>29}"
                    continue
                if name != "fer":
                    t_train = statistics.median(r[0] for r in results)
                    t_infer = statistics.median(r[1] for r in results)
                    line += f"{t_train:>13.1f}{t_infer:>12.1f}{train / t_train:>8.2f}x{infer / t_infer:>7.2f}x"
                if len(results) > 1:
                    spreads.append(f"  {name} over {len(results)} processes: train "
                                   + ", ".join(f"{r[0]:.1f}" for r in results)
                                   + "; predict " + ", ".join(f"{r[1]:.1f}" for r in results))
        print(line, flush=True)
        for spread in spreads:
            print(spread, flush=True)
    print(f"peak RSS {peak_rss:.0f} MiB" + (" (the largest of fer's processes)" if args.compare else ""))


if __name__ == "__main__":
    main()
