#!/usr/bin/env bash
# Airflow for this project on this machine (`make airflow-ui`): the scheduler, the DAG
# processor and the API server with the UI on http://127.0.0.1:${AIRFLOW_PORT:-8080}.
#
# Unlike `airflow standalone`, nothing listens beyond loopback: Airflow's log servers
# bind every interface whatever the settings (airflow/utils/serve_logs/core.py), so
# they are skipped, and the UI reads the tasks' logs from $AIRFLOW_HOME/logs instead.
# Everyone reaching the UI is an admin (SimpleAuthManager, all admins): it is only
# reachable from this machine. Ctrl-C or SIGTERM (to this script, not its process
# group: Airflow's workers are stopped by their parents) stops all three.
set -euo pipefail

: "${AIRFLOW_HOME:?set AIRFLOW_HOME (make airflow-ui does)}"
port="${AIRFLOW_PORT:-8080}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True
# LocalExecutor keeps this many worker processes (Airflow's default: 32); the DAG runs
# one task at a time (conf/base/airflow.yml: max_active_tasks)
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:${port}/execution/"
export AIRFLOW__API__BASE_URL="http://127.0.0.1:${port}"

airflow db migrate > /dev/null
pids=()
alive() {
  local pid
  for pid in "${pids[@]}"; do kill -0 "$pid" 2> /dev/null && return 0; done
  return 1
}
stop() {  # each process stops its own workers on SIGTERM; 30 s, then SIGKILL
  trap - EXIT INT TERM
  kill "${pids[@]}" 2> /dev/null || true
  for _ in $(seq 30); do alive || break; sleep 1; done
  kill -KILL "${pids[@]}" 2> /dev/null || true
  wait 2> /dev/null || true
}
trap stop EXIT INT TERM
airflow api-server --host 127.0.0.1 --port "$port" & pids+=($!)
airflow scheduler --skip-serve-logs & pids+=($!)
airflow dag-processor & pids+=($!)
echo "Airflow UI: http://127.0.0.1:${port} (DAGs from ${AIRFLOW__CORE__DAGS_FOLDER:-the default folder})" >&2
wait -n "${pids[@]}"  # one of them ending ends them all
