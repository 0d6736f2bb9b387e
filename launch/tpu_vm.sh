#!/usr/bin/env bash
# Train pose_vq on a Cloud TPU VM (v4-8, v5litepod-8, or a larger multi-host slice).
#
#   bash launch/tpu_vm.sh create | install | data | train | status | delete | all
#
# Settings (environment variables; defaults in brackets):
#   NAME [pose-vq]  ZONE [us-central2-b]  TYPE [v4-8]  RUNTIME [tpu-ubuntu2204-base]
#   BUCKET (required for data/train): gs://... bucket for the dataset and run copies
#   REPO [https://github.com/<you>/pose_vq.git]  BRANCH [main]
#   PANOPTIC [<empty>]: gs:// path of a Panoptic root (calibration + hdPose3d_stage1_coco19
#                       per sequence); empty: a synthetic root, to try the set-up
#   CONFIG [configs/3d_1024.py]  WORKDIR [~/runs/3d_f8]  EXTRA [<empty>]: --config.* overrides
#   DRY_RUN=1: print the commands instead of running them
# v5e: ZONE=us-west4-a TYPE=v5litepod-8 RUNTIME=v2-alpha-tpuv5-lite.
set -euo pipefail

NAME=${NAME:-pose-vq}
ZONE=${ZONE:-us-central2-b}
TYPE=${TYPE:-v4-8}
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}
REPO=${REPO:-https://github.com/<you>/pose_vq.git}
BRANCH=${BRANCH:-main}
PANOPTIC=${PANOPTIC:-}
CONFIG=${CONFIG:-configs/3d_1024.py}
WORKDIR=${WORKDIR:-'$HOME/runs/3d_f8'}
EXTRA=${EXTRA:-}
TFDS='$HOME/tensorflow_datasets'   # every worker reads the dataset from its local disk

run() { if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }
on_all() { run gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$1"; }
on_first() { run gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=0 --command="$1"; }
need_bucket() { [[ -n "${BUCKET:-}" ]] || { echo "set BUCKET=gs://..." >&2; exit 2; }; }

create() {
  run gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$TYPE" \
    --version="$RUNTIME"
}

install() {
  on_all "set -e; git clone -b $BRANCH $REPO pose_vq || git -C pose_vq pull; cd pose_vq; \
python3 -m venv ~/venv; . ~/venv/bin/activate; pip install -q -U pip; \
pip install -q -e '.[tpu]'; python -c 'import jax; print(jax.process_index(), jax.device_count())'"
}

data() {  # build once on worker 0, keep it in the bucket, copy it to every worker's disk
  need_bucket
  local root='$HOME/panoptic' source
  if [[ -n "$PANOPTIC" ]]; then
    source="gcloud storage rsync -r $PANOPTIC $root"
  else
    source="python -m pose_vq.data.synthetic --root=$root"
  fi
  on_first "set -e; . ~/venv/bin/activate; cd pose_vq; $source; \
python -m pose_vq.main --config=$CONFIG --mode=build_data --config.data.manual_dir=$root \
--config.data.data_dir=$TFDS $EXTRA; gcloud storage rsync -r $TFDS $BUCKET/tensorflow_datasets"
  on_all "mkdir -p $TFDS && gcloud storage rsync -r $BUCKET/tensorflow_datasets $TFDS"
}

train() {  # one process per worker; jax.distributed finds the slice's workers itself
  need_bucket
  on_all ". ~/venv/bin/activate; cd pose_vq; nohup python -m pose_vq.main --config=$CONFIG \
--workdir=$WORKDIR --distributed --config.data.data_dir=$TFDS $EXTRA > ~/train.log 2>&1 &"
}

status() {
  on_first "tail -n 5 ~/train.log; ls $WORKDIR/checkpoints 2>/dev/null"
  on_first "gcloud storage rsync -r $WORKDIR $BUCKET/runs/\$(basename $WORKDIR)"
}

delete() { run gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" --quiet; }

case "${1:-}" in
  create|install|data|train|status|delete) "$1" ;;
  all) create; install; data; train ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
