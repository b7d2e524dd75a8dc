#!/usr/bin/env bash
# Set up hpcsr on a fresh Debian/Ubuntu machine with Python 3.11: a venv in .venv with a CPU torch
# pinned first (so no multi-GB CUDA build is pulled), the package (editable) with its test extras,
# MPICH from PyPI for mpirun, and, with --system, the Debian packages for the one-node Slurm and
# CDO and headless Chromium (the tests read the outputs and open the reports with them).
# Idempotent: a second run that finds nothing changed returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
VENV=${HPCSR_VENV:-$ROOT/.venv}
TORCH_SPEC=${HPCSR_TORCH_SPEC:-torch==2.13.0}
WANT_SYSTEM=0
for a in "$@"; do
  case "$a" in
    --system) WANT_SYSTEM=1 ;;
    *) echo "setup.sh: unknown option '$a' (allowed: --system)" >&2; exit 2 ;;
  esac
done

say() { printf '[setup] %s\n' "$*"; }

if [ "$WANT_SYSTEM" = 1 ]; then
  need=()
  for cmd in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge cdo:cdo chromium:chromium; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("${cmd#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "setup.sh: missing Debian packages ${need[*]} and not root: run 'sudo apt-get install --no-install-recommends ${need[*]}' then rerun" >&2
      exit 1
    fi
    say "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq >/tmp/hpcsr-apt.log 2>&1 || { echo "setup.sh: apt-get update failed, log: /tmp/hpcsr-apt.log" >&2; exit 1; }
    timeout 600 apt-get install -y -qq --no-install-recommends "${need[@]}" >>/tmp/hpcsr-apt.log 2>&1 \
      || { echo "setup.sh: apt-get install ${need[*]} failed, log: /tmp/hpcsr-apt.log" >&2; exit 1; }
  fi
fi

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "setup.sh: need Python >= 3.10 as '$PY' (set PYTHON=/path/to/python3.11)" >&2; exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating venv $VENV"
  "$PY" -m venv "$VENV" || { echo "setup.sh: '$PY -m venv' failed: on Debian install python3-venv" >&2; exit 1; }
fi
stamp="$VENV/.hpcsr-setup-stamp"
want="$(cat pyproject.toml | sha256sum | cut -c1-16) $TORCH_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  say "venv up to date ($VENV)"
  exit 0
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
say "installing $TORCH_SPEC (CPU) first"
"${PIP[@]}" install "$TORCH_SPEC"
say "installing hpcsr with test extras and MPICH"
"${PIP[@]}" install -e ".[test,mpich]"
echo "$want" > "$stamp"
say "done: activate with 'source $VENV/bin/activate'"
