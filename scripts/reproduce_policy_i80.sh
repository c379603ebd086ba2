#!/usr/bin/env bash
# Policies trained in imagination on i80-sim, on a CPU budget (2 cores), and their closed-loop evaluation on
# test cars in Replay-v0 (the README's policy table). Stages whose checkpoint or JSON exists are skipped.
#   1. the forward model: tiny preset with PPUU's 20 context frames, vae + z-dropout, 20 predicted frames;
#   2. policies over decoupled imagined worlds (horizon 20, 4 dropout replicas, a pool of WORLD_POOL training
#      windows, actions within the kinematic bounds): MPUR and distillation of the gradient planner through
#      the model (SEEDS seeds), the same over the recorded futures (--world oracle, the ceiling), MPUR without
#      the uncertainty cost; baselines: 1-step IL and PPUU's coupled MPUR (mpur-ppuu) at the same budget;
#      DAgger: the planner over the learned traffic world distilled in closed loop;
#   3. evaluation of every driver on the same EPISODES test cars (seed 0): no-action, expert, bot, the
#      policies. The planners have their own recipe: scripts/reproduce_driving_i80.sh.
# The full-scale recipe for a GPU is scripts/train_policy_ppuu_gpu.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
WM="${WM:-.venv/bin/worldmodel}"
DATA=datasets/i80-sim
FM=runs/fm-i80-tiny
FM_STEPS="${FM_STEPS:-1500}"
POLICY_STEPS="${POLICY_STEPS:-2000}"
WORLD_POOL="${WORLD_POOL:-400}"
SEEDS="${SEEDS:-0 1 2}"
EPISODES="${EPISODES:-40}"
OUT=runs/policy-i80

[ -f "$DATA/episodes.h5" ] || "$WM" data build datasets/i80-sim.toml
[ -f "$FM/checkpoints/last.pt" ] || "$WM" train fm --data "$DATA/episodes.h5" --out "$FM" --preset tiny \
  --context-frames 20 --mode vae --image-update pixel --steps "$FM_STEPS" --batch-size 16 --predict-frames 20 \
  --lr 1e-3 --lr-schedule cosine --val-every 250 --val-windows 128 --ckpt-every 50 --workers 1 --no-progress > /dev/null

policy() {  # name, extra arguments...
  local name="$1"; shift
  [ -f "$OUT/$name/.done" ] && return 0
  "$WM" train policy --fm "$FM/checkpoints/last.pt" --data "$DATA" --out "$OUT/$name" --horizon 20 --lr 3e-4 \
    --replicas 4 --world-pool "$WORLD_POOL" --val-every 0 --val-episodes 0 --ckpt-every 100 --workers 1 \
    --no-progress "$@" > /dev/null
  touch "$OUT/$name/.done"
}
for seed in $SEEDS; do
  policy "mpur-s$seed" --method mpur --steps "$POLICY_STEPS" --seed "$seed"
  policy "distill-s$seed" --method distill --steps "$POLICY_STEPS" --seed "$seed"
done
policy distill-oracle-s0 --method distill --world oracle --steps "$POLICY_STEPS" --seed 0
policy mpur-oracle-s0 --method mpur --world oracle --steps "$POLICY_STEPS" --seed 0
policy mpur-no-u-s0 --method mpur --uncertainty 0 --steps "$POLICY_STEPS" --seed 0
policy il-s0 --method il --steps "$POLICY_STEPS" --lr 1e-3 --seed 0
policy mpur-ppuu-s0 --method mpur-ppuu --steps $((POLICY_STEPS / 8)) --seed 0  # ~8x slower per update
# DAgger: the gradient planner over the learned traffic world (runs/traffic-i80, as scripts/reproduce_driving_i80.sh
# trains it) distilled in closed loop: round 0 the planner drives 100 train cars, round 1 the policy (half of the
# steps); 600 updates of 64 windows after each; best.pt: the round with the best closed-loop val success
TRAFFIC=runs/traffic-i80
[ -f "$TRAFFIC/traffic.pt" ] || "$WM" train traffic --data "$DATA" --out "$TRAFFIC" --no-progress > /dev/null
if [ ! -f "$OUT/dagger-traffic-s0/.done" ]; then
  "$WM" train policy --method dagger --world traffic --traffic "$TRAFFIC/traffic.pt" --fm "$FM/checkpoints/last.pt" \
    --data "$DATA" --out "$OUT/dagger-traffic-s0" --rounds 2 --round-episodes 100 --steps 1200 --sequence-steps 1 \
    --batch-size 64 --lr 1e-3 --val-episodes 40 --episode-workers 2 --seed 0 --no-progress > /dev/null
  touch "$OUT/dagger-traffic-s0/.done"
fi
# The offline gate (metrics.jsonl: heldout_mse against heldout_var per action): one round of the planner's own
# drives, 15 of the 100 held out of the regression; the trunk starts at random (a forward model of 2 updates
# gives the shapes and the normalisation)
STUB=runs/fm-i80-stub
[ -f "$STUB/checkpoints/last.pt" ] || "$WM" train fm --data "$DATA/episodes.h5" --out "$STUB" --preset tiny \
  --context-frames 20 --mode vae --steps 2 --batch-size 4 --val-every 0 --workers 1 --no-progress > /dev/null
if [ ! -f "$OUT/dagger-gate/.done" ]; then
  "$WM" train policy --method dagger --world traffic --traffic "$TRAFFIC/traffic.pt" --fm "$STUB/checkpoints/last.pt" \
    --data "$DATA" --out "$OUT/dagger-gate" --rounds 1 --round-episodes 100 --steps 1500 --sequence-steps 1 \
    --batch-size 64 --lr 1e-3 --holdout 0.15 --val-episodes 40 --episode-workers 2 --seed 0 --no-progress > /dev/null
  touch "$OUT/dagger-gate/.done"
fi

evaluate() {  # name, driver, extra arguments...
  local name="$1" driver="$2"; shift 2
  [ -f "$OUT/eval/$name.json" ] && return 0
  "$WM" eval policy --driver "$driver" --data "$DATA" --split test --seed 0 --workers 2 --no-progress \
    --out "$OUT/eval/$name.json" "$@" > /dev/null
}
for driver in no-action expert bot; do evaluate "$driver" "$driver" --episodes "$EPISODES"; done
for run in "$OUT"/*/checkpoints/last.pt; do
  name="$(basename "$(dirname "$(dirname "$run")")")"
  evaluate "$name" "$run" --episodes "$EPISODES"
done
evaluate dagger-traffic-s0-best "$OUT/dagger-traffic-s0/checkpoints/best.pt" --episodes "$EPISODES"
.venv/bin/python -m worldmodel.evaluation.table "$OUT"/eval/*.json --reference "$OUT/eval/bot.json"
