#!/usr/bin/env bash
# A scheduled `kedro run` (cron): one run per schedule at a time, telemetry off, the
# project's venv and MLflow store, the MLflow run named after the schedule and the time,
# a log file per run, and the run's exit status as the script's.
#
#   scripts/scheduled_run.sh SCHEDULE [kedro run options...]
#   crontab:  0 2 * * *  /srv/multitask-cnn/scripts/scheduled_run.sh nightly
#
# Exit status: kedro's (0 = success); 75 when the previous run of SCHEDULE still runs
# (this one is skipped); 64 on a bad call. Logs: logs/scheduled/SCHEDULE/<time>.log.
# Environment: MULTITASK_CNN_PROJECT (default: this script's project), VENV (default:
# the project's .venv), MLFLOW_TRACKING_URI (default: the project's mlflow.db).
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[A-Za-z0-9_.-]+$ ]]; then
  echo "usage: $0 SCHEDULE [kedro run options...]  (SCHEDULE: letters, digits, . _ -)" >&2
  exit 64
fi
schedule=$1
shift

project=$(cd "${MULTITASK_CNN_PROJECT:-$(dirname "$0")/..}" && pwd)
venv=${VENV:-$project/.venv}
if [[ ! -x "$venv/bin/kedro" ]]; then
  echo "no kedro in $venv: run 'make install' in $project first" >&2
  exit 64
fi
cd "$project"

export KEDRO_DISABLE_TELEMETRY=1 DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true
export PATH="$venv/bin:$PATH"
stamp=$(date -u +%Y-%m-%dT%H-%M-%SZ)
export MULTITASK_CNN_RUN_NAME="$schedule $stamp" MULTITASK_CNN_SCHEDULE="$schedule"

mkdir -p "logs/scheduled/$schedule"
log="logs/scheduled/$schedule/$stamp.log"
exec 9> "logs/scheduled/$schedule/.lock"
if ! flock --nonblock 9; then
  echo "$(date -u +%FT%TZ) $schedule: the previous run still holds the lock; skipped" | tee -a "$log" >&2
  exit 75
fi

echo "$(date -u +%FT%TZ) $schedule: kedro run $*" > "$log"
status=0
kedro run "$@" >> "$log" 2>&1 || status=$?
echo "$(date -u +%FT%TZ) $schedule: exit status $status" >> "$log"
if [[ $status -ne 0 ]]; then
  echo "$schedule failed (exit $status); the end of $project/$log:" >&2
  tail -n 30 "$log" >&2
fi
exit "$status"
