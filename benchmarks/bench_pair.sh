#!/bin/bash
# A/B of two fer builds that tolerates this VM's drifting speed: the two run
# at the same time, each pinned to its own core with one thread, and swap
# cores every round, so both see the same machine. Prints training and
# predict images/s (bench_speed.py's time_fer: batch 64, predict batch 256).
#
#   bash benchmarks/bench_pair.sh OLD_DIR NEW_DIR ROUNDS MODEL [MODEL...]
#
# OLD_DIR and NEW_DIR each hold a copy of the package (DIR/fer, with its
# _core.abi3.so), e.g. `cp -r python/fer /tmp/fernew/` after `make build`;
# MODEL is preset:pooling (seed3x3:stride2, fer_vgg:).
set -euo pipefail
if [ $# -lt 4 ]; then
    sed -n '2,11p' "$0"
    exit 2
fi
old=$1 new=$2 rounds=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
one() {  # one DIR CORE MODEL
    RAYON_NUM_THREADS=1 PYTHONPATH="$1" taskset -c "$2" "$py" -c "
import sys; sys.path.insert(0, '$here')
import bench_speed as b
preset, _, pooling = '$3'.partition(':')
train, infer, _ = b.time_fer(preset, {'pooling': pooling} if pooling else {}, 64, 6, 3)
print(f'{train:.1f} {infer:.1f}')"
}
for model in "$@"; do
    for i in $(seq "$rounds"); do
        a=$((i % 2)) b=$(((i + 1) % 2))
        one "$old" $a "$model" > /tmp/bench_pair_old.$$ &
        one "$new" $b "$model" > /tmp/bench_pair_new.$$ &
        wait
        echo "$model round $i: old $(cat /tmp/bench_pair_old.$$) | new $(cat /tmp/bench_pair_new.$$)"
    done
done
rm -f /tmp/bench_pair_old.$$ /tmp/bench_pair_new.$$
