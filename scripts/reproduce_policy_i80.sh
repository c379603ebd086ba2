#!/usr/bin/env bash
# Policies trained in imagination on i80-sim, on a CPU budget (2 cores, ~2 h), and their closed-loop
# evaluation on test cars in Replay-v0 (the README's table). Stages resume where they stopped.
#   1. the forward model: tiny preset with PPUU's 20 context frames, vae + z-dropout, 20 predicted frames;
#   2. policies through it: MPUR (uncertainty cost, 0.05), MPUR without the uncertainty cost (PPUU's
#      ablation), MPER, 1-step IL; MPUR with SEEDS seeds;
#   3. evaluation of every driver on the same EPISODES test cars (seed 0): no-action, expert, bot, the
#      policies. The planners have their own recipe: scripts/reproduce_driving_i80.sh.
# The full-scale recipe for a GPU is scripts/train_policy_ppuu_gpu.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
WM="${WM:-.venv/bin/worldmodel}"
DATA=datasets/i80-sim
FM=runs/fm-i80-tiny
FM_STEPS="${FM_STEPS:-1500}"
POLICY_STEPS="${POLICY_STEPS:-500}"
SEEDS="${SEEDS:-0 1 2}"
EPISODES="${EPISODES:-100}"
OUT=runs/policy-i80

[ -f "$DATA/episodes.h5" ] || "$WM" data build datasets/i80-sim.toml
"$WM" train fm --data "$DATA/episodes.h5" --out "$FM" --preset tiny --context-frames 20 --mode vae \
  --image-update pixel --steps "$FM_STEPS" --batch-size 16 --predict-frames 20 --lr 1e-3 --lr-schedule cosine \
  --val-every 250 --val-windows 128 --ckpt-every 50 --workers 1 --no-progress > /dev/null

policy() {  # name, extra arguments...
  local name="$1"; shift
  "$WM" train policy --fm "$FM/checkpoints/last.pt" --data "$DATA" --out "$OUT/$name" --horizon 30 --lr 5e-4 \
    --val-every 0 --ckpt-every 50 --workers 1 --no-progress "$@" > /dev/null
}
for seed in $SEEDS; do
  policy "mpur-s$seed" --method mpur-ppuu --steps "$POLICY_STEPS" --seed "$seed"
done
policy mpur-no-u-s0 --method mpur-ppuu --uncertainty-weight 0 --steps "$POLICY_STEPS" --seed 0
policy mper-s0 --method mper --steps "$POLICY_STEPS" --seed 0
policy il-s0 --method il --steps $((POLICY_STEPS * 6)) --lr 1e-3 --seed 0

evaluate() {  # name, driver, extra arguments...
  local name="$1" driver="$2"; shift 2
  "$WM" eval policy --driver "$driver" --data "$DATA" --split test --seed 0 --workers 2 --no-progress \
    --out "$OUT/eval/$name.json" "$@" > /dev/null
}
for driver in no-action expert bot; do evaluate "$driver" "$driver" --episodes "$EPISODES"; done
for run in "$OUT"/*/checkpoints/last.pt; do
  name="$(basename "$(dirname "$(dirname "$run")")")"
  evaluate "$name" "$run" --episodes "$EPISODES"
done
.venv/bin/python - "$OUT/eval" <<'PY'
import json, pathlib, sys
print("| driver | episodes | success (95 % CI) | mean distance (m) | collisions ahead / behind | off-road |")
print("|---|---|---|---|---|---|")
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(path.read_text())
    lo, hi = r["success_rate_ci95"]
    print(f"| {path.stem} | {r['episodes']} | {100 * r['success_rate']:.0f} % [{100 * lo:.0f}, {100 * hi:.0f}] | "
          f"{r['mean_distance_m']:.1f} | {100 * r['collision_ahead_rate']:.0f} % / {100 * r['collision_behind_rate']:.0f} % | "
          f"{100 * r['offroad_rate']:.0f} % |")
PY
