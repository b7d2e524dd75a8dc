#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the embedded default data (synthetic
# Comephore-format archives generated on the fly). Extra arguments go to `hpcsr demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hpcsr demo "$@"
