#!/usr/bin/env bash
# PPUU's order on the tiny dataset: a deterministic model first, then vae and vae-lp warm-started from it,
# so the two stochastic models differ only in their prior. Budget: ~8 minutes of CPU (one thread).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
WM="${WM:-.venv/bin/worldmodel}"
DATA=datasets/tiny/episodes.h5
COMMON=(--data "$DATA" --preset tiny --image-update pixel --batch-size 16 --predict-frames 10 --lr 1e-3
        --lr-schedule cosine --val-every 100 --val-windows 128 --ckpt-every 100 --workers 1 --no-progress)
[ -f "$DATA" ] || "$WM" data build datasets/tiny.toml
"$WM" train fm "${COMMON[@]}" --out runs/fm-tiny-det --mode deterministic --steps "${DET_STEPS:-400}" > /dev/null
for mode in vae vae-lp; do
  "$WM" train fm "${COMMON[@]}" --out "runs/fm-tiny-ws-$mode" --mode "$mode" --steps "${STEPS:-300}" \
    --warm-start runs/fm-tiny-det/checkpoints/last.pt > /dev/null
  "$WM" eval fm --checkpoint "runs/fm-tiny-ws-$mode/checkpoints/last.pt" --data "$DATA" --split test \
    --k 10 --horizon 10 --windows 200 --seed 0 --out "runs/fm-tiny-ws-$mode/eval.json" > /dev/null
done
.venv/bin/python - <<'PY'
import json
vae, lp = (json.load(open(f"runs/fm-tiny-ws-{m}/eval.json")) for m in ("vae", "vae-lp"))
for name, r in (("vae", vae), ("vae-lp", lp)):
    s = r["summary"]
    print(name, "best-of-10", s["best_of_k"]["image_mse"], "mean-of-10", s["mean_of_k"]["image_mse"],
          "copy-last", s["copy_last"]["image_mse"], "beats copy-last 1-10:", all(r["per_step"]["mean"]["image_mse"][i] < r["per_step"]["copy_last"]["image_mse"][i] for i in range(10)),
          "action sensitivity", round(r["action_sensitivity"]["states"], 3))
print("vae-lp best-of-10 <= vae best-of-10:", lp["summary"]["best_of_k"]["image_mse"] <= vae["summary"]["best_of_k"]["image_mse"])
PY
