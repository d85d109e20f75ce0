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

if [[ $# -lt 1 || ! "$1" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]]; then
  echo "usage: $0 SCHEDULE [kedro run options...]  (SCHEDULE: letters, digits, _ . -; not starting with . or -)" >&2
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
if ! command -v flock > /dev/null; then
  echo "flock not found (util-linux): it keeps two runs of a schedule apart" >&2
  exit 64
fi

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
# kedro runs in the background so that a TERM or INT sent to this script (systemd,
# timeout, kill) reaches it: training then stops after its step and saves its progress
kedro run "$@" >> "$log" 2>&1 &  # it inherits the lock (fd 9): no overlap even if this script dies
pid=$!
trap 'kill -TERM "$pid" 2> /dev/null' TERM INT
status=0
wait "$pid" || status=$?
if kill -0 "$pid" 2> /dev/null; then  # wait returned for the signal: wait for kedro
  wait "$pid" || status=$?
fi
trap - TERM INT
echo "$(date -u +%FT%TZ) $schedule: exit status $status" >> "$log"
if [[ $status -ne 0 ]]; then
  echo "$schedule failed (exit $status); the end of $project/$log:" >&2
  tail -n 30 "$log" >&2
fi
exit "$status"
