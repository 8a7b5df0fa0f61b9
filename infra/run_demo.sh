#!/usr/bin/env bash
# The main job on one machine: install what is missing, start the local broker and a worker
# (embedded Qdrant store under var/), index the demo catalog, play shoppers, print results.
# The worker keeps serving until Ctrl-C; then worker and broker are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
PORT=${VR_BROKER_PORT:-9092}
export VR_KAFKA_BROKER=${VR_KAFKA_BROKER:-kafka://127.0.0.1:$PORT}
PY=.venv/bin/python
mkdir -p var

$PY -m infra.local_broker start --data-dir var/broker --port "$PORT"
worker_pid=""
cleanup() {
  [ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
  $PY -m infra.local_broker stop --data-dir var/broker
}
trap cleanup EXIT
trap 'exit 130' INT TERM

$PY -m streams.topics
$PY -m streams worker -l info >var/worker.log 2>&1 &
worker_pid=$!
until grep -q "Worker ready" var/worker.log; do
  kill -0 "$worker_pid" 2>/dev/null || { tail -30 var/worker.log; exit 1; }
  sleep 0.5
done
echo "worker ready (pid $worker_pid, log var/worker.log)"

$PY -m streams.demo "$@"
if [ -z "${VR_DEMO_EXIT:-}" ]; then
  echo; echo "Worker still running at http://127.0.0.1:${VR_WEB_PORT:-6066}/ - press Ctrl-C to stop."
  wait "$worker_pid"
fi
