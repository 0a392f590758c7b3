#!/usr/bin/env bash
# fer against PyTorch on a machine with more cores than the 2-core dev VM:
# two cores pinned (taskset, as on the dev VM) and then every core. Needs
# python3 with numpy and (for the comparison) torch, and fer importable
# (PYTHONPATH=python after `make build`, or the wheel installed).
#
#     bash benchmarks/bench_threads.sh [OUT_DIR]
#
# Prints bench_speed.py's tables; each also goes to OUT_DIR (default runs/).
set -u
out=${1:-runs}
mkdir -p "$out"
cores=$(nproc)
lscpu | grep -E 'Model name|^CPU\(s\)|L2 cache' || true
python3 -c 'import numpy, sys; print("python", sys.version.split()[0], "numpy", numpy.__version__)'
python3 -c 'import torch; print("torch", torch.__version__)' 2>/dev/null || echo "no torch: fer alone"
models=seed3x3:stride2,seed4x4:stride2,fer_vgg:
if command -v taskset >/dev/null; then
    timeout 240 taskset -c 0,1 python3 benchmarks/bench_speed.py --models "$models" --threads 2 \
        --repeats 3 --compare --processes 1 2>&1 | tee "$out/threads_2.txt"
fi
timeout 240 python3 benchmarks/bench_speed.py --models "$models,seed3x3:same" --threads "$cores" \
    --repeats 3 --compare --processes 1 2>&1 | tee "$out/threads_$cores.txt"
