#!/usr/bin/env bash
# The full-scale policy recipe (PPUU's, SPEC.md §4-5) on one GPU, after scripts/train_fm_ppuu_gpu.sh: MPUR
# with the stochastic model (z from the prior, T = 30, 10 dropout replicas, uncertainty weight 0.05), 100k
# updates, batch 6, Adam 1e-4, grad clip 50, 3 seeds; the ablation without the uncertainty cost; MPER; 1-step
# IL; closed-loop validation on 50 val cars every 2,000 updates (best.pt kept); then every driver on the whole
# test split in Replay-v0 (8 workers). Every stage resumes from its last.pt if interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
WM="${WM:-.venv/bin/worldmodel}"
DATA=datasets/i80-sim
FM="${FM:-runs/fm-ppuu-vae/checkpoints/best.pt}"
STEPS="${STEPS:-100000}"
OUT=runs/policy-ppuu
DEVICE="${DEVICE:-cuda}"

policy() {  # name, extra arguments...
  local name="$1"; shift
  "$WM" train policy --fm "$FM" --data "$DATA" --out "$OUT/$name" --device "$DEVICE" --steps "$STEPS" \
    --horizon 30 --replicas 10 --batch-size 6 --lr 1e-4 --grad-clip 50 --val-every 2000 --val-episodes 50 \
    --ckpt-every 1000 --log-every 100 --workers 4 "$@"
}
for seed in 0 1 2; do
  policy "mpur-s$seed" --method mpur-ppuu --seed "$seed"
  policy "mpur-no-u-s$seed" --method mpur-ppuu --uncertainty-weight 0 --seed "$seed"
  policy "mper-s$seed" --method mper --seed "$seed"
  policy "il-s$seed" --method il --seed "$seed"
done

evaluate() {  # name, driver, extra arguments...
  local name="$1" driver="$2"; shift 2
  "$WM" eval policy --driver "$driver" --data "$DATA" --split test --seed 0 --workers 8 --device "$DEVICE" \
    --out "$OUT/eval/$name.json" "$@"
}
for driver in no-action expert bot; do evaluate "$driver" "$driver"; done
for run in "$OUT"/*/checkpoints/best.pt; do
  evaluate "$(basename "$(dirname "$(dirname "$run")")")" "$run"
done
evaluate plan-grad-model plan:grad --world model --fm "$FM" --option samples=4 --option replicas=2
evaluate plan-cem-model plan:cem --world model --fm "$FM" --option samples=4 --option replicas=2
