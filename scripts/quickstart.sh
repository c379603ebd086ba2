#!/usr/bin/env bash
# Setup, then the main job end to end on the small embedded default (the `tiny` scenario):
# simulate traffic and write a top-down video with its realism summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/quickstart}
mkdir -p "$OUT"
.venv/bin/worldmodel sim --scenario tiny --seconds 60 --warmup 30 --seed 0 --video "$OUT/sim.mp4"
echo "quickstart: video and summary in $OUT/"
