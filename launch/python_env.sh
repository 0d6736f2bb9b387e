#!/usr/bin/env bash
# A virtualenv with a Python that pose_vq's dependencies accept (>= 3.11: jax >= 0.10 needs
# it), with pip in it, on images whose python3 is older (Ubuntu 22.04's 3.10: the Cloud TPU
# runtimes, many GPU boxes):
#
#   bash launch/python_env.sh DIR      # then DIR/bin/pip install -e '.[tpu]' (or cuda12, cuda13)
#
# python3 makes it when it is new enough; otherwise uv (installed with pip --user, or its
# installer, when missing) makes it with a Python it downloads, PYTHON_VERSION [3.12].
# Fails with one line when neither can. Sourced, it defines make_venv.

make_venv() {  # make_venv DIR
  local dir=$1 version=${PYTHON_VERSION:-3.12} uv
  if python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
      && python3 -m venv "$dir" 2>/dev/null; then
    return 0
  fi
  uv=$(command -v uv || echo "$HOME/.local/bin/uv")
  if [[ ! -x "$uv" ]]; then
    python3 -m pip install -q --user uv >/dev/null 2>&1 \
      || curl -LsSf https://astral.sh/uv/install.sh 2>/dev/null | sh >/dev/null 2>&1 || true
  fi
  if [[ -x "$uv" ]] && "$uv" venv -q --allow-existing --seed --python "$version" "$dir" >/dev/null 2>&1; then
    return 0
  fi
  echo "error: no Python >= 3.11 for $dir: python3 is $(python3 --version 2>&1 || echo missing)," \
    "and uv could not provide Python $version (install python3.11+ or uv, or set PYTHON_VERSION)" >&2
  return 1
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -uo pipefail
  [[ $# == 1 ]] || { echo "usage: bash $0 DIR" >&2; exit 2; }
  make_venv "$1"
fi
