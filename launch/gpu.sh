#!/usr/bin/env bash
# Train pose_vq on one GPU box, from a clone of the repository (several nodes: slurm.sbatch).
#
#   bash launch/gpu.sh install | data | bench | train | all
#
# Settings (environment variables; defaults in brackets):
#   PANOPTIC [<empty>]: a local Panoptic root; empty: a synthetic root, to try the set-up
#   TFDS [~/tensorflow_datasets]  CONFIG [configs/3d_1024.py]  WORKDIR [runs/3d_f8]
#   BATCH [8]: global batch; EXTRA [<empty>]: more --config.* overrides
#   CUDA [12]: JAX's CUDA wheels, jax[cuda12] or jax[cuda13] (the driver must support it)
#   DRY_RUN=1: print the commands instead of running them
# bf16 activations (float32 params, codebook distances and losses) are on by default here.
set -euo pipefail
cd "$(dirname "$0")/.."

PANOPTIC=${PANOPTIC:-}
TFDS=${TFDS:-$HOME/tensorflow_datasets}
CONFIG=${CONFIG:-configs/3d_1024.py}
WORKDIR=${WORKDIR:-runs/3d_f8}
BATCH=${BATCH:-8}
EXTRA=${EXTRA:-}
CUDA=${CUDA:-12}
GPU_KNOBS="--config.model.dtype=bfloat16 --config.train.batch_size=$BATCH"

run() { if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }

install() {
  run bash launch/python_env.sh .venv  # Python >= 3.11, also where python3 is older
  run .venv/bin/pip install -q -U pip
  run .venv/bin/pip install -q -e ".[cuda$CUDA]"
  run .venv/bin/python -c "import jax; print(jax.devices())"
}

data() {  # built once; every later run reads it from $TFDS
  local root=$PANOPTIC
  if [[ -z "$root" ]]; then
    root=$HOME/panoptic_synthetic
    run .venv/bin/python -m pose_vq.data.synthetic --root="$root"
  fi
  # shellcheck disable=SC2086
  run .venv/bin/python -m pose_vq.main --config="$CONFIG" --mode=build_data \
    --config.data.manual_dir="$root" --config.data.data_dir="$TFDS" $EXTRA
}

bench() {  # step time, FLOP rate against the measured bf16 matmul peak, memory
  # shellcheck disable=SC2086
  run .venv/bin/python -m pose_vq.benchmark step --config="$CONFIG" --batch_sizes="$BATCH" \
    --compare=model.dtype=float32,bfloat16 --compare=model.remat_levels=0,2 $EXTRA
}

train() {
  # shellcheck disable=SC2086
  run .venv/bin/python -m pose_vq.main --config="$CONFIG" --workdir="$WORKDIR" \
    --config.data.data_dir="$TFDS" $GPU_KNOBS $EXTRA
}

case "${1:-}" in
  install|data|bench|train) "$1" ;;
  all) install; data; train ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
