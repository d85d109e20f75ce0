#!/usr/bin/env bash
# A team MLflow tracking server on this machine, for `kedro run --env team`:
# a throwaway PostgreSQL cluster in a folder (Debian's `postgresql` package; reachable only
# through a Unix socket in that private folder, no TCP) holds runs,
# metrics and the model registry; a separate folder holds the artifacts, which the
# server proxies (clients never write there directly); `mlflow server` listens on
# 127.0.0.1 only.
#
#   scripts/team_server.sh start    # (make team-server) init once, start, wait until it answers
#   scripts/team_server.sh stop     # (make team-server-stop) stop MLflow and PostgreSQL; data kept
#   scripts/team_server.sh status
#
# Settings (environment): TEAM_SERVER_DIR (.team_server: pg/ the cluster, artifacts/,
# logs), TEAM_SERVER_PORT (5002, MLflow), TEAM_PG_PORT (5433, PostgreSQL's socket name), PG_BIN (the
# newest /usr/lib/postgresql/*/bin). Delete TEAM_SERVER_DIR after `stop` to start over.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=$(realpath -m "${TEAM_SERVER_DIR:-.team_server}")
PORT=${TEAM_SERVER_PORT:-5002}
PG_PORT=${TEAM_PG_PORT:-5433}
MLFLOW=${MLFLOW_BIN:-.venv/bin/mlflow}
PYTHON=$(dirname "$MLFLOW")/python
URI="http://127.0.0.1:$PORT"
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true

die() { echo "team_server: $*" >&2; exit 1; }

pg_bin() {
  local bin=${PG_BIN:-}
  if [[ -z $bin ]]; then
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  fi
  [[ -n $bin && -x $bin/initdb ]] || die "PostgreSQL not found (no /usr/lib/postgresql/*/bin/initdb); install Debian's package: apt-get install postgresql (or set PG_BIN)"
  echo "$bin"
}

# PostgreSQL refuses to run as root: as root, its programs run as the `postgres` user
# the Debian package creates, and the cluster folder belongs to that user.
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

answers() {  # MLflow's /health answers OK (no curl on a bare machine: the venv's Python)
  "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "$URI/health" >/dev/null 2>&1
}

# the saved PID, if it is still this folder's `mlflow server` (not a PID reused since)
mlflow_pid() {
  local pid
  [[ -f $DIR/mlflow.pid ]] || return 1
  pid=$(cat "$DIR/mlflow.pid")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--artifacts-destination $DIR/artifacts" \
    || return 1
  echo "$pid"
}

mlflow_running() { mlflow_pid >/dev/null; }

wait_until_up() {
  for _ in $(seq 1 180); do
    if answers; then
      echo "team_server: up at $URI; send runs there with: .venv/bin/kedro run --env team"
      return
    fi
    mlflow_running || { tail -n 20 "$DIR/mlflow.log" >&2; die "mlflow server exited; see $DIR/mlflow.log"; }
    sleep 1
  done
  tail -n 20 "$DIR/mlflow.log" >&2
  die "mlflow server did not answer at $URI within 180 s; see $DIR/mlflow.log"
}

start() {
  local bin
  bin=$(pg_bin)
  [[ -x $MLFLOW ]] || die "$MLFLOW not found; run make install first"
  if mlflow_running; then  # up, or still starting: wait for it rather than start another
    echo "team_server: already started (store: PostgreSQL in $DIR/pg, artifacts: $DIR/artifacts)" >&2
    wait_until_up
    return
  fi
  mkdir -p "$DIR/artifacts"
  if [[ $(id -u) -eq 0 ]] && ! runuser -u postgres -- test -x "$DIR"; then
    die "$DIR is not reachable by the postgres user (a parent folder is private); choose TEAM_SERVER_DIR elsewhere"
  fi
  if [[ ! -f $DIR/pg/PG_VERSION ]]; then
    mkdir -p "$DIR/pg"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$DIR/pg"
    chmod 700 "$DIR/pg"
    echo "team_server: creating a PostgreSQL cluster in $DIR/pg" >&2
    # trust: only through the Unix socket below, in this private (700) folder; no TCP
    as_pg "$bin/initdb" -D "$DIR/pg" -U mlflow --auth=trust -E UTF8 >"$DIR/initdb.log" 2>&1 \
      || die "initdb failed; see $DIR/initdb.log"
  fi
  if ! as_pg "$bin/pg_ctl" -D "$DIR/pg" status >/dev/null 2>&1; then
    # no TCP at all (another local user could otherwise log in as the superuser);
    # -k: its socket in the private cluster folder, not /var/run/postgresql
    as_pg "$bin/pg_ctl" -D "$DIR/pg" -l "$DIR/pg/server.log" -w -t 60 \
      -o "-c listen_addresses='' -p $PG_PORT -k '$DIR/pg'" start >/dev/null \
      || die "PostgreSQL did not start (socket in $DIR/pg); see $DIR/pg/server.log"
  fi
  if ! as_pg "$bin/psql" -h "$DIR/pg" -p "$PG_PORT" -U mlflow -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'mlflow'" | grep -q 1; then
    as_pg "$bin/createdb" -h "$DIR/pg" -p "$PG_PORT" -U mlflow mlflow
  fi
  if answers; then
    die "something else already answers at $URI; set TEAM_SERVER_PORT"
  fi
  # its own process group, so that stop ends the server's workers with it
  setsid "$MLFLOW" server \
    --backend-store-uri "postgresql+psycopg2://mlflow@/mlflow?host=$DIR/pg&port=$PG_PORT" \
    --artifacts-destination "$DIR/artifacts" \
    --host 127.0.0.1 --port "$PORT" --workers 1 \
    >"$DIR/mlflow.log" 2>&1 </dev/null &
  echo $! >"$DIR/mlflow.pid"
  echo "team_server: starting MLflow at $URI (store: PostgreSQL in $DIR/pg, artifacts: $DIR/artifacts)" >&2
  wait_until_up
}

stop() {
  local pid
  if pid=$(mlflow_pid); then  # setsid made it its group's leader: the group is its own
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/mlflow.pid"
  if [[ -f $DIR/pg/PG_VERSION ]]; then
    local bin
    bin=$(pg_bin)
    if as_pg "$bin/pg_ctl" -D "$DIR/pg" status >/dev/null 2>&1; then
      as_pg "$bin/pg_ctl" -D "$DIR/pg" -m fast -w stop >/dev/null
    fi
  fi
  echo "team_server: stopped (data kept in $DIR)"
}

status() {
  if mlflow_running && answers; then
    echo "team_server: up at $URI"
  else
    echo "team_server: not running"
    return 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
