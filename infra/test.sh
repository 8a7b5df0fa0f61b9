#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs unit and integration tests
# (each integration module starts its own broker and workers and stops them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
