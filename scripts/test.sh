#!/usr/bin/env bash
# Set up (idempotent), lint (ruff) and run the whole test suite: starts the one-node Slurm for tests marked
# 'slurm' and always stops it again, also when tests fail. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --system || exit 1
# lint and format first (a second each; configured in pyproject.toml)
.venv/bin/ruff check --quiet . && .venv/bin/ruff format --check --quiet . \
  || { echo "[test] ruff: fix with '.venv/bin/ruff check --fix .' and '.venv/bin/ruff format .'" >&2; exit 1; }
started=0
if bash slurm/start.sh; then started=1; else echo "[test] local Slurm did not start: tests marked slurm will fail (see message above)" >&2; fi
cleanup() { [ "$started" = 1 ] && bash slurm/stop.sh; }
trap cleanup EXIT
.venv/bin/python -m pytest "$@"
