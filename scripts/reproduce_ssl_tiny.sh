#!/usr/bin/env bash
# SSL on the tiny dataset: every method on the tiny backbone (a few CPU minutes each, one thread, two
# methods at a time), then the probes against the mean of 3 random backbones, and the throughput benchmark
# at the ppuu preset. Results in runs/ssl-tiny/ (eval.json per method, table.md, bench.json).
set -euo pipefail
cd "$(dirname "$0")/.."
WM=${WM:-.venv/bin/worldmodel}
DATA=datasets/tiny/episodes.h5
STEPS=${STEPS:-300}
OUT=${OUT:-runs/ssl-tiny}
METHODS=${METHODS:-"vicreg barlow simclr byol simsiam"}
[ -f "$DATA" ] || "$WM" data build datasets/tiny.toml
mkdir -p "$OUT"

run() {  # method
  OMP_NUM_THREADS=1 "$WM" train ssl --method "$1" --preset tiny --data "$DATA" --out "$OUT/$1" \
    --steps "$STEPS" --log-every 10 --ckpt-every 50 --no-progress > "$OUT/$1-train.json"
  OMP_NUM_THREADS=1 "$WM" eval ssl --checkpoint "$OUT/$1/checkpoints/last.pt" --data "$DATA" \
    --out "$OUT/$1/eval.json" > /dev/null
}
set -- $METHODS
while [ $# -gt 0 ]; do
  run "$1" &
  [ $# -gt 1 ] && run "$2"
  wait
  shift $(( $# > 1 ? 2 : 1 ))
done

.venv/bin/python -m worldmodel.ssl.table "$OUT" $METHODS | tee "$OUT/table.md"
[ "${BENCH:-1}" = 1 ] && "$WM" bench ssl --quick > "$OUT/bench.json"
# use a pretrained backbone: worldmodel train fm --backbone runs/ssl-tiny/vicreg/backbone.pt ...
