#!/usr/bin/env bash
# Setup, then the main job end to end on the small embedded default (the `tiny` scenario, a few minutes on 2 cores):
# simulate traffic (top-down video), build the dataset (record trajectories -> extract episodes), train a tiny
# forward model and render its predictions, train a policy in imagination (decoupled MPUR over the model's
# worlds), evaluate it closed loop against no-action and the bot on the test cars (table printed, JSON written)
# and render one of its rollouts. Stage times are written to $OUT/timings.txt.
# The sizes can be overridden (the tests run every stage at a micro setting): SETUP=0 skips the setup, RECIPE and
# DATA the dataset recipe and its directory, SIM_SECONDS, FM_STEPS, POLICY_STEPS, WORLD_POOL, EPISODES (test cars
# evaluated; empty: all), WORKERS (evaluation processes), PYTHON the interpreter that runs `worldmodel`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SETUP:-1}" = 0 ] || bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
OUT=${OUT:-runs/quickstart}
RECIPE=${RECIPE:-datasets/tiny.toml}
DATA=${DATA:-datasets/tiny}
SIM_SECONDS=${SIM_SECONDS:-60}
FM_STEPS=${FM_STEPS:-300}
POLICY_STEPS=${POLICY_STEPS:-200}
WORLD_POOL=${WORLD_POOL:-200}
EPISODES=${EPISODES:-}
WORKERS=${WORKERS:-2}
PYTHON=${PYTHON:-.venv/bin/python}
wm() { "$PYTHON" -m worldmodel.cli "$@"; }
mkdir -p "$OUT"
: > "$OUT/timings.txt"
stage() {  # name, command...: run it and append its wall time to timings.txt
  local name="$1" start=$SECONDS; shift
  "$@"
  echo "$name $((SECONDS - start)) s" | tee -a "$OUT/timings.txt"
}
stage simulate wm sim --scenario tiny --seconds "$SIM_SECONDS" --warmup 30 --seed 0 --video "$OUT/sim.mp4"
stage dataset wm data build "$RECIPE" --out-dir "$DATA" --no-progress
wm data inspect "$DATA/episodes.h5" > "$OUT/episodes-summary.json"
# one process: both cores
OMP_NUM_THREADS=2 stage forward-model wm train fm --data "$DATA/episodes.h5" --out "$OUT/fm" --preset tiny --mode vae \
  --image-update pixel --steps "$FM_STEPS" --batch-size 16 --predict-frames 10 --lr 1e-3 --lr-schedule cosine \
  --val-every 0 --workers 1 --no-resume --no-progress > /dev/null
FM="$OUT/fm/checkpoints/last.pt"
stage predictions wm render predictions --checkpoint "$FM" --data "$DATA/episodes.h5" --windows 2 --k 2 \
  --split test --out "$OUT/predictions.gif"
stage policy wm train policy --method mpur --fm "$FM" --data "$DATA" --out "$OUT/policy" --horizon 20 \
  --replicas 4 --world-pool "$WORLD_POOL" --steps "$POLICY_STEPS" --lr 3e-4 --val-every 0 --val-episodes 0 --workers 1 \
  --no-resume --no-progress > /dev/null
evaluate() {  # name, driver, extra arguments...: every eligible test car, seed 0
  local name="$1" driver="$2"; shift 2
  stage "eval-$name" wm eval policy --driver "$driver" --data "$DATA" --split test --seed 0 --workers "$WORKERS" \
    --no-progress ${EPISODES:+--episodes "$EPISODES"} --out "$OUT/eval-$name.json" "$@" > /dev/null
}
evaluate no-action no-action
evaluate bot bot
evaluate policy "$OUT/policy/checkpoints/last.pt" --fm "$FM"
"$PYTHON" -m worldmodel.evaluation.table "$OUT/eval-no-action.json" "$OUT/eval-bot.json" "$OUT/eval-policy.json" \
  --reference "$OUT/eval-bot.json" | tee "$OUT/table.md"
vehicle=$("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['per_episode'][0]['vehicle'])" \
  "$OUT/eval-policy.json")
stage rollout wm render rollout --driver "$OUT/policy/checkpoints/last.pt" --fm "$FM" --data "$DATA" \
  --vehicle "$vehicle" --out "$OUT/rollout.gif"
echo "quickstart: video, GIFs, table and timings in $OUT/, dataset in $DATA/"
