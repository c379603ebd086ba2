#!/usr/bin/env bash
# The full-scale forward model (PPUU's recipe, SPEC.md §3) on one GPU: the ppuu preset on the i80-sim
# dataset, 200k deterministic updates, then 200k stochastic updates warm-started from them (vae with a fixed
# prior and z-dropout, and vae-lp with a learned prior), batch 64, Adam 1e-4, grad clip 5; then the
# evaluation protocol and a prediction video. Every stage resumes from its last.pt if interrupted.
# Several GPUs: NPROC=4 bash scripts/train_fm_ppuu_gpu.sh (torchrun; the batch of 64 is split over them).
set -euo pipefail
cd "$(dirname "$0")/.."
WM="${WM:-.venv/bin/worldmodel}"
NPROC="${NPROC:-1}"
AMP="${AMP:-bf16}"          # off | bf16 | fp16 (PPUU trained in float32)
STEPS="${STEPS:-200000}"
DATA=datasets/i80-sim/episodes.h5
COMMON=(--data "$DATA" --preset ppuu --steps "$STEPS" --batch-size 64 --predict-frames 20 --lr 1e-4
        --amp "$AMP" --workers 6 --val-every 5000 --val-windows 1024 --ckpt-every 2000 --log-every 50)

train() {
  if [ "$NPROC" -gt 1 ]; then
    .venv/bin/torchrun --standalone --nproc_per_node "$NPROC" -m worldmodel.cli train fm "$@"
  else
    "$WM" train fm "$@"
  fi
}

[ -f "$DATA" ] || "$WM" data build datasets/i80-sim.toml
train "${COMMON[@]}" --mode deterministic --out runs/fm-ppuu-det
for mode in vae vae-lp; do
  train "${COMMON[@]}" --mode "$mode" --warm-start runs/fm-ppuu-det/checkpoints/last.pt --out "runs/fm-ppuu-$mode"
  "$WM" eval fm --checkpoint "runs/fm-ppuu-$mode/checkpoints/best.pt" --data "$DATA" --split test \
    --k 10 --horizon 20 --windows 1000 --seed 0 --batch-size 64 --workers 4 --out "runs/fm-ppuu-$mode/eval.json"
  "$WM" render predictions --checkpoint "runs/fm-ppuu-$mode/checkpoints/best.pt" --data "$DATA" \
    --out "runs/fm-ppuu-$mode/videos/predictions.mp4" --windows 4 --k 3
done
