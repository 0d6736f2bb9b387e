#!/usr/bin/env bash
# Train pose_vq on a Cloud TPU VM slice (v4, v5e, v5p or v6e; one host or many), from your
# machine with gcloud. The run's workdir is in your bucket, so every worker writes its
# checkpoints there and a pre-empted slice resumes from them.
#
#   bash launch/tpu_vm.sh create | install | data | train | status | resume | delete | all
#
# create: a queued resource (Spot with SPOT=1), waited for until ACTIVE; install: on every
# worker, a Python >= 3.11 venv and pip install -e '.[tpu]', one status line per worker;
# data: the dataset built once on worker 0, kept in the bucket, copied to every worker;
# train: one process per worker (--worker=all), jax.distributed finding the slice;
# status: each worker's last log lines and the bucket's checkpoints; resume: a slice that
# is gone (pre-empted) created again, installed, given the bucket's dataset and trained on
# from the workdir's last checkpoint; all: create, install, data, train.
#
# Required: REPO (git URL of the pose_vq repository every worker clones) and BUCKET
# (gs://..., the runs and a copy of the built dataset; in the slice's region).
# Settings (environment variables; defaults in brackets):
#   NAME [pose-vq]: the queued resource and its TPU  ZONE [us-central2-b]
#   TYPE [v4-8]: accelerator type: v4-N, v5litepod-N (v5e), v5p-N, v6e-N
#   RUNTIME [from TYPE]: v4 tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite,
#                        v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e
#   SPOT [0]: 1 requests Spot capacity (pre-emptible; `resume` brings the run back)
#   BRANCH [main]  PYTHON_VERSION [3.12]: the workers' venv Python where python3 is older
#   PANOPTIC [<empty>]: gs:// Panoptic root (calibration + hdPose3d_stage1_coco19 per
#                       sequence); empty: a synthetic root, to try the set-up
#   CONFIG [configs/3d_1024.py]  WORKDIR [$BUCKET/runs/$NAME]  EXTRA [<empty>]: --config.* overrides
#   WAIT [3600], POLL [30]: seconds to wait for the slice, between looks
#   DRY_RUN=1: print the commands, run none
set -euo pipefail

NAME=${NAME:-pose-vq}
ZONE=${ZONE:-us-central2-b}
TYPE=${TYPE:-v4-8}
SPOT=${SPOT:-0}
BRANCH=${BRANCH:-main}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
PANOPTIC=${PANOPTIC:-}
CONFIG=${CONFIG:-configs/3d_1024.py}
EXTRA=${EXTRA:-}
WAIT=${WAIT:-3600}
TFDS="\$HOME/tensorflow_datasets"  # on each worker's disk: the loader reads local files
DRY=${DRY_RUN:-0}

runtime_for() {  # the TPU software version for an accelerator type (Cloud TPU's table)
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-*|v3-*|v4-*) echo tpu-ubuntu2204-base ;;
    *) echo "error: TYPE=$1: no runtime known for it; set RUNTIME (see Cloud TPU's runtime versions)" >&2
       return 1 ;;
  esac
}
RUNTIME=${RUNTIME:-$(runtime_for "$TYPE")} || exit 2

need() {  # need VAR...: stop in one line when a required setting is missing
  local var
  for var in "$@"; do
    [[ -n "${!var:-}" ]] || { echo "error: set $var (see the top of $0)" >&2; exit 2; }
  done
  if [[ -n "${BUCKET:-}" && "$BUCKET" != gs://* ]]; then
    echo "error: BUCKET=$BUCKET is not a gs:// bucket" >&2; exit 2
  fi
  WORKDIR=${WORKDIR:-${BUCKET%/}/runs/$NAME}
}

run() { if [[ "$DRY" == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }
on_all() { run gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$1"; }
on_first() { run gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=0 --command="$1"; }
qr_state() {  # the queued resource's state (ACTIVE, WAITING_FOR_RESOURCES, SUSPENDED, ...), or NONE
  gcloud compute tpus queued-resources describe "$NAME" --zone="$ZONE" \
    --format='value(state.state)' 2>/dev/null || echo NONE
}

create() {
  local spot=() state waited=0
  [[ "$SPOT" == 1 ]] && spot=(--spot)
  run gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" --zone="$ZONE" \
    --accelerator-type="$TYPE" --runtime-version="$RUNTIME" "${spot[@]}"
  [[ "$DRY" == 1 ]] && return
  while state=$(qr_state); [[ "$state" != ACTIVE ]]; do
    case "$state" in
      FAILED|SUSPENDED|NONE) echo "error: queued resource $NAME is $state" >&2; exit 1 ;;
    esac
    ((waited < WAIT)) || { echo "error: $NAME still $state after $WAIT s" >&2; exit 1; }
    echo "$NAME: $state" >&2
    sleep "${POLL:-30}"; waited=$((waited + ${POLL:-30}))
  done
}

worker_install() {  # on each worker, alone: one status line; never starts the TPU backend
  local log=$HOME/pose_vq_install.log step
  fail() { echo "pose_vq install FAILED on $(hostname) at $step: $(tail -n 1 "$log")"; exit 1; }
  : >"$log"
  step=clone
  if [[ -d pose_vq/.git ]]; then
    { git -C pose_vq fetch -q origin "$BRANCH" && git -C pose_vq checkout -q -B "$BRANCH" FETCH_HEAD; } >>"$log" 2>&1 || fail
  else
    git clone -q -b "$BRANCH" "$REPO" pose_vq >>"$log" 2>&1 || fail
  fi
  step=python
  PYTHON_VERSION=$PYTHON_VERSION bash pose_vq/launch/python_env.sh "$HOME/venv" >>"$log" 2>&1 || fail
  step="pip install"
  { "$HOME/venv/bin/pip" install -q -U pip && "$HOME/venv/bin/pip" install -q -e 'pose_vq[tpu]'; } >>"$log" 2>&1 || fail
  step=import
  "$HOME/venv/bin/python" -c 'import jax, libtpu, gcsfs, pose_vq.main' >>"$log" 2>&1 || fail
  echo "pose_vq install ok on $(hostname): $("$HOME/venv/bin/python" --version 2>&1), jax $("$HOME/venv/bin/python" -c 'import jax; print(jax.__version__)')"
}

install() {
  need REPO
  local out workers ok
  out=$(on_all "$(declare -f worker_install); REPO=$(printf %q "$REPO") BRANCH=$(printf %q "$BRANCH") \
PYTHON_VERSION=$(printf %q "$PYTHON_VERSION") worker_install" 2>&1) || true
  echo "$out"
  [[ "$DRY" == 1 ]] && { check_devices; return; }
  workers=$(gcloud compute tpus tpu-vm describe "$NAME" --zone="$ZONE" \
    --format='value(networkEndpoints[].ipAddress)' | tr ';' '\n' | grep -c .) || workers=0
  ok=$(grep -c '^pose_vq install ok on ' <<<"$out") || ok=0
  if grep -q '^pose_vq install FAILED' <<<"$out" || ((ok < workers || workers == 0)); then
    echo "error: pose_vq installed on $ok of $workers workers (lines above; each worker's log: ~/pose_vq_install.log)" >&2
    exit 1
  fi
  check_devices
}

check_devices() {  # every worker at once (the slice's backend waits for all), bounded
  on_all "timeout 600 \$HOME/venv/bin/python -c 'import jax; jax.distributed.initialize(); \
print(jax.process_index(), jax.process_count(), jax.device_count(), jax.devices()[0].device_kind)'"
}

data() {  # build once on worker 0 (no TPU backend: it would wait for the other workers)
  need BUCKET
  local root="\$HOME/panoptic" source
  if [[ -n "$PANOPTIC" ]]; then
    source="gcloud storage rsync -r $PANOPTIC $root"
  else
    source="\$HOME/venv/bin/python -m pose_vq.data.synthetic --root=$root"
  fi
  on_first "set -e; cd pose_vq; $source; JAX_PLATFORMS=cpu \$HOME/venv/bin/python -m pose_vq.main \
--config=$CONFIG --mode=build_data --config.data.manual_dir=$root --config.data.data_dir=$TFDS $EXTRA; \
gcloud storage rsync -r $TFDS $BUCKET/tensorflow_datasets"
  fetch_data
}

fetch_data() {  # the bucket's dataset onto every worker's disk
  need BUCKET
  on_all "mkdir -p $TFDS && gcloud storage rsync -r $BUCKET/tensorflow_datasets $TFDS"
}

train() {  # one process per worker; restarts none that is still running
  need BUCKET
  on_all "cd pose_vq; if pgrep -f '[p]ose_vq[.]main' >/dev/null; then echo \"\$(hostname): still training\"; \
else nohup \$HOME/venv/bin/python -m pose_vq.main --config=$CONFIG --workdir=$WORKDIR --distributed \
--config.data.data_dir=$TFDS $EXTRA >\$HOME/train.log 2>&1 & fi"
}

status() {
  need BUCKET
  on_all "echo \"== \$(hostname)\"; tail -n 3 \$HOME/train.log"
  run gcloud storage ls "$WORKDIR/checkpoints/"
}

resume() {  # the slice again if it is gone, then training on from the bucket's checkpoint
  need REPO BUCKET
  local state
  if [[ "$DRY" == 1 ]]; then state=SUSPENDED; else state=$(qr_state); fi
  echo "$NAME: $state" >&2
  if [[ "$state" != ACTIVE ]]; then
    [[ "$state" == NONE ]] || run gcloud compute tpus queued-resources delete "$NAME" \
      --zone="$ZONE" --force --quiet
    create
    install
    fetch_data
  fi
  train
}

delete() { run gcloud compute tpus queued-resources delete "$NAME" --zone="$ZONE" --force --quiet; }

case "${1:-}" in
  create|install|data|train|status|resume|delete) "$1" ;;
  all) need REPO BUCKET; create; install; data; train ;;
  *) sed -n '2,29p' "$0"; exit 2 ;;
esac
