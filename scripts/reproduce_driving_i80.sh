#!/usr/bin/env bash
# Driving on i80-sim (the README's driving table): every car of the test split (seed 0) in Replay-v0, driven by
# the expert, the bot, no-action, and the planners (gradient MPC, CEM) over the worlds: the recorded future
# (oracle, privileged), constant velocity (cv), the learned traffic model (traffic) and the forward models (model:
# the tiny model; model-cv: the tiny model correcting the cv frames); plan:grad with PPUU's objective in the
# oracle world reproduces its failure; scene-dagger: a policy on object-level features of the scene, DAgger from the
# traffic-world planner (6 rounds of 200 train cars, ~12 min each); scene-mpur-*: the same policy class trained
# by MPUR in an object-level imagination (traffic: the learned traffic model's world; cv; oracle: the recording),
# from scratch, 4 rounds of 500 updates, windows at the policy's own states joining after each (~25 min each);
# scene-mpur-dagger: the same from the scene-dagger policy; scene-mpur-closing-s*: the recipe that drives (no gradient
# through the features, closing inputs, 6 rounds at 1e-4; ~70 min each with three sharing 2 cores), seeds 0-2, and
# scene-mpur-closing-cv / -oracle: that recipe in the cv world and in the recorded future (~45 min each with two
# sharing 2 cores). CPU recipe (2 cores): each forward model takes ~25-30 min, the traffic
# model ~1 min; a planner row over all 465 test cars ~20 min (grad, oracle world: 7.3 ms per car-step), the model
# worlds about twice that, CEM about four times.
# Stages whose JSON exists are skipped; the table is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
WM="${WM:-.venv/bin/worldmodel}"
DATA=datasets/i80-sim
FM=runs/fm-i80-tiny
OUT="${OUT:-runs/driving-i80}"
WORKERS="${WORKERS:-2}"
EPISODES="${EPISODES:-}"  # empty: every eligible test car
FM_CV=runs/fm-i80-cv
TRAFFIC=runs/traffic-i80
ROWS="${ROWS:-expert bot no-action grad-ppuu-oracle grad-oracle grad-oracle-2s grad-cv grad-traffic grad-model grad-model-cv cem-oracle cem-cv cem-traffic cem-model scene-dagger scene-mpur-traffic scene-mpur-dagger scene-mpur-cv-r0 scene-mpur-oracle-r0 scene-mpur-closing-s0 scene-mpur-closing-s1 scene-mpur-closing-s2 scene-mpur-closing-cv scene-mpur-closing-oracle}"
SCENE=runs/scene-dagger

wants() {  # does ROWS hold any of the given rows?
  local row; for row in "$@"; do [[ " $ROWS " == *" $row "* ]] && return 0; done; return 1
}
[ -f "$DATA/episodes.h5" ] || "$WM" data build datasets/i80-sim.toml
# each model is trained only when a row of ROWS drives in its world
! wants grad-model cem-model || [ -f "$FM/checkpoints/last.pt" ] || "$WM" train fm --data "$DATA/episodes.h5" --out "$FM" --preset tiny \
  --context-frames 20 --mode vae --image-update pixel --steps 1500 --batch-size 16 --predict-frames 20 --lr 1e-3 \
  --lr-schedule cosine --val-every 250 --val-windows 128 --ckpt-every 50 --workers 1 --no-progress > /dev/null
! wants grad-model-cv || [ -f "$FM_CV/checkpoints/last.pt" ] || "$WM" train fm --data "$DATA/episodes.h5" --out "$FM_CV" --preset tiny \
  --context-frames 20 --mode vae --image-update pixel --base cv --steps 1500 --batch-size 16 --predict-frames 20 \
  --lr 1e-3 --lr-schedule cosine --val-every 250 --val-windows 128 --ckpt-every 50 --workers 1 --no-progress > /dev/null
! wants grad-traffic cem-traffic scene-dagger scene-mpur-traffic scene-mpur-dagger || [ -f "$TRAFFIC/traffic.pt" ] || "$WM" train traffic --data "$DATA" --out "$TRAFFIC" --no-progress > /dev/null
# the scene policy: round 0 the traffic-world planner drives 200 train cars, then the policy (the planner's action
# executed with probability 0.5^r); 3,000 updates of 256 labelled steps after each round; best.pt by 40 val cars
if wants scene-dagger scene-mpur-dagger && [ ! -f "$SCENE/.done" ]; then
  "$WM" train policy --method dagger --observation scene --world traffic --traffic "$TRAFFIC/traffic.pt" --data "$DATA" \
    --out "$SCENE" --rounds 6 --round-episodes 200 --steps 18000 --batch-size 256 --lr 1e-3 --holdout 0.15 \
    --val-episodes 40 --episode-workers "$WORKERS" --seed 0 --no-scene-closing --no-progress > /dev/null
  touch "$SCENE/.done"
fi
# MPUR of a scene policy in an object-level imagination: 2,000 windows of recorded moments, then rounds of 500
# updates of 32 windows (T = 30), 2,000 windows cut from the policy's own drives of 200 train cars joining before
# each round after the first; the policy after the last round (last.pt) is evaluated
scene_mpur() {  # name, world, seed, extra arguments...
  local name="$1" world="$2" seed="$3"; shift 3
  [ -f "runs/$name/.done" ] && return 0
  "$WM" train policy --method mpur --observation scene --world "$world" --traffic "$TRAFFIC/traffic.pt" --data "$DATA" \
    --out "runs/$name" --world-pool 2000 --val-windows 200 --round-episodes 200 \
    --driven-stride 10 --batch-size 32 --val-every 0 --val-episodes 100 --episode-workers "$WORKERS" --seed "$seed" \
    --no-progress "$@" > /dev/null
  touch "runs/$name/.done"
}
# these four: the gradient through the features and no closing inputs
! wants scene-mpur-traffic || scene_mpur scene-mpur-traffic traffic 0 --lr 3e-4 --steps 2000 --rounds 4 \
  --feature-gradient --no-scene-closing
! wants scene-mpur-dagger || scene_mpur scene-mpur-dagger traffic 0 --lr 1e-5 --steps 2000 --rounds 4 \
  --feature-gradient --init-policy "$SCENE/checkpoints/best.pt"
for world in cv oracle; do
  ! wants "scene-mpur-$world-r0" || scene_mpur "scene-mpur-$world-r0" "$world" 0 --lr 3e-4 --steps 500 --rounds 1 \
    --feature-gradient --no-scene-closing
done
# the recipe (the defaults: no gradient through the features the policy reads, its closing inputs), 6 rounds at 1e-4
for seed in 0 1 2; do
  ! wants "scene-mpur-closing-s$seed" || scene_mpur "scene-mpur-closing-s$seed" traffic "$seed" --lr 1e-4 --steps 3000 \
    --rounds 6
done
for world in cv oracle; do
  ! wants "scene-mpur-closing-$world" || scene_mpur "scene-mpur-closing-$world" "$world" 0 --lr 1e-4 --steps 3000 \
    --rounds 6
done

evaluate() {  # name, driver, extra arguments...
  local name="$1" driver="$2"; shift 2
  [ -f "$OUT/$name.json" ] && return 0
  "$WM" eval policy --driver "$driver" --data "$DATA" --split test --seed 0 --workers "$WORKERS" --no-progress \
    ${EPISODES:+--episodes "$EPISODES"} --out "$OUT/$name.json" "$@" > /dev/null
}
names=()
for row in $ROWS; do
  case "$row" in
    expert|bot|no-action) evaluate "$row" "$row" ;;
    grad-ppuu-oracle) evaluate "$row" plan:grad --world oracle --objective ppuu --option lane_plans=none \
                        --option iterations=10 --option slow_horizon=none ;;  # SPEC §8's planner: warm start only, 2 s
    grad-oracle-2s) evaluate "$row" plan:grad --world oracle --option slow_horizon=none ;;  # 2 s at every speed
    grad-model|cem-model) evaluate "$row" "plan:${row%%-*}" --world model --fm "$FM/checkpoints/last.pt" ;;
    grad-model-cv) evaluate "$row" plan:grad --world model --fm "$FM_CV/checkpoints/last.pt" ;;
    grad-traffic|cem-traffic) evaluate "$row" "plan:${row%%-*}" --world traffic --fm "$TRAFFIC/traffic.pt" ;;
    scene-dagger) evaluate "$row" "$SCENE/checkpoints/best.pt" ;;
    scene-mpur-*) evaluate "$row" "runs/$row/checkpoints/last.pt" ;;
    grad-*|cem-*) evaluate "$row" "plan:${row%%-*}" --world "${row#*-}" ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  names+=("$OUT/$row.json")
done
.venv/bin/python -m worldmodel.evaluation.table "${names[@]}" --reference "$OUT/bot.json"
