#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs unit and integration tests
# (each integration module starts its own broker and workers and stops them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
# tests/test_compose.py checks docker-compose.yml with `docker compose config` where Docker is
# installed, else with docker-compose 1.29 (Compose's Python implementation, the same schema
# check) in a venv of its own: its pinned dependencies clash with the project's.
if ! docker compose version >/dev/null 2>&1 && [ ! -x .venv-compose/bin/docker-compose ]; then
  "${PYTHON:-python3.11}" -m venv .venv-compose
  # It needs PyYAML < 6, which has no wheel for Python 3.11 and whose source no longer builds with
  # Cython 3: build it first, against Cython 2, outside pip's isolated build environment.
  .venv-compose/bin/pip install -q --disable-pip-version-check "cython<3" wheel setuptools
  .venv-compose/bin/pip install -q --disable-pip-version-check --no-build-isolation pyyaml==5.4.1
  .venv-compose/bin/pip install -q --disable-pip-version-check docker-compose==1.29.2
fi
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
