#!/usr/bin/env bash
# One GPU device check (one CUDA 12 GPU, e.g. an H200), from a clone of the repository:
# install, jax.devices(), the paper's 3D F8 training step (float32 and bfloat16 at batch 8,
# compiled into an empty compilation cache), the bf16 step again from that cache (the
# cached start), the reference's step beside pose_vq's when REFERENCE names a checkout,
# 200 demo steps with native convolutions and their token export, then the step in bf16 at
# larger batches (stopping at the first that does not fit), and one JSON summary.
#
#   bash launch/device_check.sh        # about 8 minutes; BUDGET caps it
#
# Settings (environment variables; defaults in brackets):
#   INSTALL [1]: 0 reuses an existing .venv   PY [.venv/bin/python]
#   CONFIG [configs/3d_1024.py:f8,paper]  STEP_BATCH [8]: float32 and bf16 rows at this batch
#   BF16_BATCHES [16,32]: bf16 rows, one stage each, to find the largest batch that fits
#   EXTRA_STEP [<empty>]: more benchmark flags (e.g. --steps=2 or --config.* overrides)
#   REFERENCE [<empty>]: a checkout of TeCSAR-UNCC/Pose-Quantization (carried to the machine);
#                 its training step is timed beside pose_vq's at STEP_BATCH (float32, CUDA)
#   DEMO_STEPS [200]  EXTRA_DEMO [<empty>]: more --config.* overrides for the demo run
#   OUT [workdirs/device_check/<date-time>]: logs/ (each stage's .out, .err) and demo/
#   SUMMARY [device_check.json]: the JSON summary (pose_vq.benchmarks.device_summary)
#   BUDGET [450]: seconds for all stages; a stage still running then is stopped, later
#                 ones are skipped; each is recorded in the summary either way
#   DRY_RUN=1: print the commands instead of running them
# A failed stage does not stop the later ones; the script exits 1 if one failed or was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

INSTALL=${INSTALL:-1}
PY=${PY:-.venv/bin/python}
CONFIG=${CONFIG:-configs/3d_1024.py:f8,paper}
STEP_BATCH=${STEP_BATCH:-8}
BF16_BATCHES=${BF16_BATCHES-16,32}
EXTRA_STEP=${EXTRA_STEP:-}
REFERENCE=${REFERENCE:-}
DEMO_STEPS=${DEMO_STEPS:-200}
EXTRA_DEMO=${EXTRA_DEMO:-}
OUT=${OUT:-workdirs/device_check/$(date +%Y%m%d-%H%M%S)}
SUMMARY=${SUMMARY:-device_check.json}
BUDGET=${BUDGET:-450}
LOGS=$OUT/logs
WORKDIR=$OUT/demo
CACHE="--config.compilation_cache_dir=$OUT/jax_cache"  # empty at the start: cold compiles

run() { if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }

stage() {  # stage NAME CMD...: CMD's output in $LOGS/NAME.{out,err}, its status in stages.tsv
  local name=$1 rc=0 start=$SECONDS left=$((BUDGET - SECONDS))
  shift
  if [[ "${DRY_RUN:-0}" == 1 ]]; then run "$@"; return; fi
  if ((left < 20)); then
    echo "== $name: skipped (BUDGET=$BUDGET s spent)"
    printf '%s\tskipped\t0\t%s\n' "$name" "$*" >>"$LOGS/stages.tsv"
    return
  fi
  echo "== $name: $*"
  # timeout signals the whole process group: the benchmark's per-row processes too.
  timeout -k 10 "$left" "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.err" || rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$*" >>"$LOGS/stages.tsv"
  echo "   rc $rc after $((SECONDS - start)) s (logs: $LOGS/$name.out, .err)"
  if ((rc)); then tail -n 5 "$LOGS/$name.err"; fi
}

if [[ "${DRY_RUN:-0}" != 1 ]]; then
  [[ ! -e "$WORKDIR" ]] || { echo "$WORKDIR exists: set OUT to a fresh directory" >&2; exit 2; }
  mkdir -p "$LOGS"
fi

if [[ "$INSTALL" == 1 ]]; then
  stage venv bash launch/python_env.sh .venv  # Python >= 3.11, also where python3 is older
  stage pip .venv/bin/pip install -q -U pip
  stage install .venv/bin/pip install -q -e ".[cuda12]"
fi
stage devices "$PY" -m pose_vq.benchmarks.device_summary devices
# shellcheck disable=SC2086
stage step "$PY" -m pose_vq.benchmark step --config="$CONFIG" --batch_sizes="$STEP_BATCH" \
  --compare=model.dtype=float32,bfloat16 --json "$CACHE" $EXTRA_STEP
# The same bf16 row in a new process: every program from the cache the row above filled.
# shellcheck disable=SC2086
stage step_cached "$PY" -m pose_vq.benchmark step --config="$CONFIG" \
  --batch_sizes="$STEP_BATCH" --compare=model.dtype=bfloat16 --json "$CACHE" $EXTRA_STEP
if [[ -n "$REFERENCE" ]]; then
  stage reference "$PY" -m pose_vq.benchmarks.reference --reference="$REFERENCE" \
    --config="$CONFIG" --what=step --batch_sizes="$STEP_BATCH" --rounds=2 --json "$CACHE"
fi
# shellcheck disable=SC2086
stage demo "$PY" -m pose_vq.main --config=configs/demo.py --workdir="$WORKDIR" \
  --config.train.num_steps="$DEMO_STEPS" --config.model.conv_impl=native $EXTRA_DEMO
stage tokenize "$PY" -m pose_vq.tokenize --workdir="$WORKDIR" --split=validation --verify --json
for batch in ${BF16_BATCHES//,/ }; do  # one stage each: those done before BUDGET are kept
  # shellcheck disable=SC2086
  stage "step_bf16_$batch" "$PY" -m pose_vq.benchmark step --config="$CONFIG" \
    --batch_sizes="$batch" --compare=model.dtype=bfloat16 --json $EXTRA_STEP
  # a batch that does not fit is a row with its error: larger ones would not fit either
  if grep -qs '"error"' "$LOGS/step_bf16_$batch.out"; then break; fi
done
# With the venv's python: the summary needs absl-py but no JAX, so it is written when JAX is broken.
run "$PY" -m pose_vq.benchmarks.device_summary summarise --logs="$LOGS" \
  --workdir="$WORKDIR" --out="$SUMMARY"
