#!/usr/bin/env bash
# Forward-model training with DistributedDataParallel under torchrun: one process per GPU (NCCL), or
# NPROC CPU processes (gloo) where there is no GPU. The global batch (--batch-size) is split over the
# processes; rank 0 writes metrics.jsonl and the checkpoints; the logged loss is the mean over ranks.
# Example (2 CPU processes, the tiny dataset): NPROC=2 DEVICE=cpu PRESET=tiny bash scripts/train_fm_ddp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NPROC="${NPROC:-2}"
DEVICE="${DEVICE:-auto}"
PRESET="${PRESET:-ppuu}"
DATA="${DATA:-datasets/tiny/episodes.h5}"
OUT="${OUT:-runs/fm-ddp}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
.venv/bin/torchrun --standalone --nproc_per_node "$NPROC" -m worldmodel.cli train fm \
  --data "$DATA" --out "$OUT" --preset "$PRESET" --mode vae --device "$DEVICE" \
  --steps "${STEPS:-1000}" --batch-size "${BATCH:-64}" --val-every 500 --ckpt-every 500 "$@"
