#!/usr/bin/env bash
# Setup, then the main job end to end on the small embedded default (the `tiny` scenario):
# simulate traffic (top-down video + realism summary), then build the tiny dataset
# (record trajectories -> extract episodes) and print its summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/quickstart}
mkdir -p "$OUT"
.venv/bin/worldmodel sim --scenario tiny --seconds 60 --warmup 30 --seed 0 --video "$OUT/sim.mp4"
.venv/bin/worldmodel data build datasets/tiny.toml
.venv/bin/worldmodel data inspect datasets/tiny/episodes.h5 > "$OUT/episodes-summary.json"
echo "quickstart: video and summaries in $OUT/, dataset in datasets/tiny/"
