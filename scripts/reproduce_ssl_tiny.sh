#!/usr/bin/env bash
# SSL on the tiny dataset: every method on the tiny backbone (a few CPU minutes each, one thread, two
# methods at a time), then the probes against a random backbone, and the throughput benchmark at the ppuu
# preset. Results in runs/ssl-tiny/.
set -euo pipefail
cd "$(dirname "$0")/.."
WM=${WM:-.venv/bin/worldmodel}
DATA=datasets/tiny/episodes.h5
STEPS=${STEPS:-300}
METHODS=${METHODS:-"vicreg barlow simclr byol simsiam"}
[ -f "$DATA" ] || "$WM" data build datasets/tiny.toml
mkdir -p runs/ssl-tiny

run() {  # method
  OMP_NUM_THREADS=1 "$WM" train ssl --method "$1" --preset tiny --data "$DATA" --out "runs/ssl-tiny/$1" \
    --steps "$STEPS" --log-every 10 --ckpt-every 50 --no-progress > "runs/ssl-tiny/$1-train.json"
  OMP_NUM_THREADS=1 "$WM" eval ssl --checkpoint "runs/ssl-tiny/$1/checkpoints/last.pt" --data "$DATA" \
    --out "runs/ssl-tiny/$1/eval.json" > /dev/null
}
set -- $METHODS
while [ $# -gt 0 ]; do
  run "$1" &
  [ $# -gt 1 ] && run "$2"
  wait
  shift $(( $# > 1 ? 2 : 1 ))
done

# the table: method x ridge R^2 (ssl / random) x effective rank
.venv/bin/python - $METHODS <<'PY'
import json, sys
for m in sys.argv[1:]:
    r = json.load(open(f"runs/ssl-tiny/{m}/eval.json"))
    cells = [f"{t} {v['ridge_r2']:.3f}/{r['random']['probes'][t]['ridge_r2']:.3f}" for t, v in r["ssl"]["probes"].items()]
    print(m, " | ".join(cells), f"| repr rank {r['ssl']['health']['repr_effective_rank']:.1f}")
PY

# use the pretrained backbone: worldmodel.ssl.load_backbone("runs/ssl-tiny/vicreg/backbone.pt", ...)
"$WM" bench ssl --quick
