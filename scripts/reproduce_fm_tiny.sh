#!/usr/bin/env bash
# Train and evaluate the tiny stochastic forward models (vae, vae-lp) on datasets/tiny, on CPU, 5 seeds each.
# Budget per model: 500 steps, ~3.5 min on one thread, + ~1 min of eval; two models run side by side
# (one per core), so the 10 models take ~22 min of wall time on 2 cores (dataset ~1 min if missing).
# Recipe notes: --image-update pixel (the logit update's gradient, sigmoid', vanishes on the saturated
# pixels of these views; a logit run at constant lr 1e-3 lost to copy-last at steps 1-2 in the same budget),
# lr 1e-3 with cosine decay (PPUU's constant 1e-4 is for 200k steps).
# Checks of the issue: vae beats copy-last-frame on image MSE at horizon steps 1-10 (test split),
# best-of-10 < mean-of-10, action sensitivity >= 1.1 on states, vae-lp best-of-10 <= vae best-of-10.
# The seed-to-seed spread of best-of-10 (~2 % at this budget) is larger than the gap between the modes, so
# the modes are compared on their mean over the seeds, with the spread printed beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
WM="${WM:-.venv/bin/worldmodel}"
STEPS="${STEPS:-500}"
SEEDS="${SEEDS:-0 1 2 3 4}"
DATA=datasets/tiny/episodes.h5

[ -f "$DATA" ] || "$WM" data build datasets/tiny.toml
run() {  # mode seed
  local out="runs/fm-tiny-$1-s$2"
  "$WM" train fm --data "$DATA" --out "$out" --preset tiny --mode "$1" --image-update pixel --seed "$2" \
    --steps "$STEPS" --batch-size 16 --predict-frames 10 --lr 1e-3 --lr-schedule cosine \
    --val-every 100 --val-windows 128 --ckpt-every 100 --workers 1 --no-progress > "$out.log" 2>&1
  "$WM" eval fm --checkpoint "$out/checkpoints/last.pt" --data "$DATA" --split test \
    --k 10 --horizon 10 --windows 200 --seed 0 --out "$out/eval.json" > /dev/null
}
for seed in $SEEDS; do
  run vae "$seed" &
  run vae-lp "$seed"
  wait
done
"$WM" render predictions --checkpoint runs/fm-tiny-vae-lp-s0/checkpoints/last.pt --data "$DATA" \
  --out runs/fm-tiny-vae-lp-s0/videos/predictions.gif --windows 4 --k 3
.venv/bin/python - $SEEDS <<'PY'
import json, statistics, sys
seeds = sys.argv[1:]
ev = {m: [json.load(open(f"runs/fm-tiny-{m}-s{s}/eval.json")) for s in seeds] for m in ("vae", "vae-lp")}
def stat(m, key, metric="image_mse"):
    xs = [e["summary"][key][metric] for e in ev[m]]
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0
for m in ev:
    print(f"{m}: mean < copy-last at steps 1-10 on every seed:", all(
        all(a < c for a, c in zip(e["per_step"]["mean"]["image_mse"], e["per_step"]["copy_last"]["image_mse"]))
        for e in ev[m]))
    for key in ("copy_last", "mean", "mean_of_k", "best_of_k"):
        mu, sd = stat(m, key)
        print(f"  {key:10s} image MSE {mu:.6f} +- {sd:.6f}   position RMSE {stat(m, key, 'position_rmse_m')[0]:.3f} m")
    print("  best-of-10 < mean-of-10 on every seed:",
          all(e["summary"]["best_of_k"]["image_mse"] < e["summary"]["mean_of_k"]["image_mse"] for e in ev[m]))
    print("  action sensitivity (states):", [round(e["action_sensitivity"]["states"], 3) for e in ev[m]])
print("vae-lp best-of-10 <= vae best-of-10 (mean over seeds):", stat("vae-lp", "best_of_k")[0] <= stat("vae", "best_of_k")[0])
PY
