#!/usr/bin/env bash
# The chaos run (scripts/test.sh runs it last): a stack of its own (its own
# PostgreSQL cluster, Redis, broker, Lambda host, gateway and poller,
# on their own ports), mixed load through the gateway while real processes
# are killed and restarted, then an invariant check of the database and the
# topics (tools/local/src/bin/chaos). Bounded (about 3 minutes, at most
# CHAOS_TIMEOUT_S), it stops everything it started, also on failure.
#
#   bash scripts/chaos.sh                   the run
#   bash scripts/chaos.sh fault KIND [ARG]  one fault against a running chaos stack
#                                           (the chaos binary calls this):
#       function [NAME]   SIGKILL a function process of this run's Lambda host
#       broker            SIGKILL the broker, start it again on the same SQLite file
#       redis             SIGKILL Redis, start it again empty (no persistence)
#       postgres [MODE]   pg_ctlcluster ... restart -m MODE (fast, immediate)
# Each fault exits 0 only when the process really went away and came back,
# and prints the pids as evidence.

CHAOS_PG_PORT="${CHAOS_PG_PORT:-5433}"
CHAOS_REDIS_PORT="${CHAOS_REDIS_PORT:-6380}"
CHAOS_BROKER_PORT="${CHAOS_BROKER_PORT:-9093}"
CHAOS_HTTP_PORT="${CHAOS_HTTP_PORT:-3010}"
CHAOS_LAMBDA_PORT="${CHAOS_LAMBDA_PORT:-9010}"
CHAOS_TIMEOUT_S="${CHAOS_TIMEOUT_S:-420}"
CHAOS_PG_CLUSTER="paystream_chaos"
CHAOS_DB="paystream_chaos"

# Everything below talks to the chaos stack only, whatever the caller
# (test.sh, which points at the shared services) exported.
export PAYSTREAM_LAMBDA=host
export PAYSTREAM_BROKER_PORT="$CHAOS_BROKER_PORT"
export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$CHAOS_BROKER_PORT"
export PAYSTREAM_DB="$CHAOS_DB"
export DATABASE_URL="postgres://postgres@127.0.0.1:$CHAOS_PG_PORT/$CHAOS_DB"
export REDIS_URL="redis://127.0.0.1:$CHAOS_REDIS_PORT/0"
export PAYSTREAM_HTTP_PORT="$CHAOS_HTTP_PORT"
export PAYSTREAM_LAMBDA_PORT="$CHAOS_LAMBDA_PORT"
export PUBLIC_BASE_URL="http://127.0.0.1:$CHAOS_HTTP_PORT"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# The run's own broker SQLite file, pid files and logs (fresh per run).
STATE_DIR="$PAYSTREAM_CACHE/chaos"
LOG_DIR="$STATE_DIR/logs"
PG_VERSION="$(ls /etc/postgresql | sort -V | tail -1)"
FUNCTIONS=(account pay verify fds-consumer loyalty-consumer benefit-consumer order settle report)

chaos_log() { printf '\033[1m[chaos %s]\033[0m %s\n' "$(date +%T)" "$*" >&2; }

# --- PostgreSQL: a cluster of its own --------------------------------------
pg_data_dir() { pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$CHAOS_PG_CLUSTER" '$1 == v && $2 == c { print $6 }'; }

chaos_pg_up() {
  if [[ -z "$(pg_data_dir)" ]]; then
    chaos_log "creating the PostgreSQL cluster $PG_VERSION/$CHAOS_PG_CLUSTER on port $CHAOS_PG_PORT"
    pg_createcluster "$PG_VERSION" "$CHAOS_PG_CLUSTER" -p "$CHAOS_PG_PORT" -- --auth=trust >/dev/null
  fi
  if ! pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$CHAOS_PG_CLUSTER" status >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$CHAOS_PG_CLUSTER" start
  fi
  for _ in $(seq 1 100); do pg_isready -h 127.0.0.1 -p "$CHAOS_PG_PORT" -q && break; sleep 0.1; done
  pg_isready -h 127.0.0.1 -p "$CHAOS_PG_PORT" -q || { chaos_log "PostgreSQL $CHAOS_PG_CLUSTER did not start"; return 1; }
  psql -h 127.0.0.1 -p "$CHAOS_PG_PORT" -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$CHAOS_DB\" WITH (FORCE)" >/dev/null
  psql -h 127.0.0.1 -p "$CHAOS_PG_PORT" -U postgres -d postgres -qc "CREATE DATABASE \"$CHAOS_DB\"" >/dev/null
}

chaos_pg_down() {
  if [[ -n "$(pg_data_dir)" ]] && pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$CHAOS_PG_CLUSTER" status >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$CHAOS_PG_CLUSTER" stop -m fast || true
  fi
}

# --- Redis: its own server, no persistence ---------------------------------
redis_pid() { cat "$STATE_DIR/redis.pid" 2>/dev/null || true; }

chaos_redis_start() {
  mkdir -p "$LOG_DIR"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$CHAOS_REDIS_PORT" --save "" --appendonly no \
    --dir "$STATE_DIR" --pidfile "$STATE_DIR/redis.pid" --logfile "$LOG_DIR/redis.log"
  for _ in $(seq 1 50); do redis-cli -p "$CHAOS_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$CHAOS_REDIS_PORT" ping >/dev/null 2>&1 || { chaos_log "Redis did not start"; return 1; }
  for _ in $(seq 1 20); do [[ -s "$STATE_DIR/redis.pid" ]] && break; sleep 0.1; done
}

gone() { # pid: waits (bounded) until it has exited (or is a zombie)
  local pid=$1
  for _ in $(seq 1 100); do
    [[ -e "/proc/$pid" ]] || return 0
    [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]] && return 0
    sleep 0.05
  done
  return 1
}

# A pid from one of our pid files is still that process (pids get reused).
runs() { # pid command-name
  [[ -n "$1" ]] && [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == "$2" ]]
}

chaos_redis_stop() {
  local pid
  pid="$(redis_pid)"
  if runs "$pid" redis-server; then kill -KILL "$pid"; gone "$pid" || true; fi
  rm -f "$STATE_DIR/redis.pid"
}

# --- the runtime: stopped by pid, never by name -----------------------------
descendants() { # pids...: every descendant, children first
  local pid child
  for pid in "$@"; do
    for child in $(pgrep -P "$pid" || true); do
      echo "$child"
      descendants "$child"
    done
  done
}

chaos_stop_runtime() {
  local listed=() pids=() pid
  [[ -f "$STATE_DIR/runtime.pids" ]] && mapfile -t listed <"$STATE_DIR/runtime.pids"
  for pid in "${listed[@]}"; do
    [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$CARGO_TARGET_DIR"/* ]] && pids+=("$pid")
  done
  rm -f "$STATE_DIR/runtime.pids"
  ((${#pids[@]})) || return 0
  local all=("${pids[@]}")
  mapfile -t -O "${#all[@]}" all < <(descendants "${pids[@]}")
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.2
  done
  for pid in "${all[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

chaos_down() {
  chaos_stop_runtime
  runs "$(broker_pid)" "$BROKER_CRATE" || rm -f "$STATE_DIR/broker.pid"
  stop_broker
  chaos_redis_stop
  chaos_pg_down
}

# --- faults -----------------------------------------------------------------
fault_function() { # [name]
  local want="${1:-}" runtime=() candidates=() pid exe name
  mapfile -t runtime <"$STATE_DIR/runtime.pids"
  for pid in $(descendants "${runtime[@]}"); do
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || continue
    name="$(basename "${exe% (deleted)}")"
    [[ " ${FUNCTIONS[*]} " == *" $name "* ]] || continue
    [[ -z "$want" || "$name" == "$want" ]] && candidates+=("$pid:$name")
  done
  ((${#candidates[@]})) || { echo "no running function process${want:+ named $want}" >&2; return 1; }
  local pick="${candidates[RANDOM % ${#candidates[@]}]}"
  pid="${pick%%:*}" name="${pick#*:}"
  kill -KILL "$pid"
  gone "$pid" || { echo "$name (pid $pid) still alive after SIGKILL" >&2; return 1; }
  echo "SIGKILL $name (pid $pid; ${#candidates[@]} candidate processes)"
}

fault_broker() {
  local old new
  old="$(broker_pid)"
  [[ -n "$old" ]] && kill -0 "$old" 2>/dev/null || { echo "no broker process to kill" >&2; return 1; }
  kill -KILL "$old"
  gone "$old" || { echo "broker (pid $old) still alive after SIGKILL" >&2; return 1; }
  rm -f "$STATE_DIR/broker.pid"
  ensure_broker >&2
  new="$(broker_pid)"
  [[ -n "$new" && "$new" != "$old" ]] && kill -0 "$new" || { echo "broker did not come back" >&2; return 1; }
  echo "SIGKILL $BROKER_CRATE (pid $old), started again on the same SQLite file as pid $new"
}

fault_redis() {
  local old new keys
  old="$(redis_pid)"
  [[ -n "$old" ]] && kill -0 "$old" 2>/dev/null || { echo "no Redis process to kill" >&2; return 1; }
  kill -KILL "$old"
  gone "$old" || { echo "Redis (pid $old) still alive after SIGKILL" >&2; return 1; }
  rm -f "$STATE_DIR/redis.pid"
  chaos_redis_start >&2
  new="$(redis_pid)"
  [[ -n "$new" && "$new" != "$old" ]] || { echo "Redis did not come back" >&2; return 1; }
  keys="$(redis-cli -p "$CHAOS_REDIS_PORT" dbsize)"
  echo "SIGKILL redis (pid $old), started again empty as pid $new (dbsize $keys just after start)"
}

fault_postgres() { # [mode]
  local mode="${1:-fast}" data old new
  data="$(pg_data_dir)"
  old="$(head -1 "$data/postmaster.pid" 2>/dev/null)" || { echo "PostgreSQL $CHAOS_PG_CLUSTER is not running" >&2; return 1; }
  pg_ctlcluster --skip-systemctl-redirect -m "$mode" "$PG_VERSION" "$CHAOS_PG_CLUSTER" restart >&2
  for _ in $(seq 1 100); do pg_isready -h 127.0.0.1 -p "$CHAOS_PG_PORT" -q && break; sleep 0.1; done
  new="$(head -1 "$data/postmaster.pid" 2>/dev/null)"
  [[ -n "$new" && "$new" != "$old" ]] && pg_isready -h 127.0.0.1 -p "$CHAOS_PG_PORT" -q || { echo "PostgreSQL did not come back" >&2; return 1; }
  echo "pg_ctlcluster $PG_VERSION $CHAOS_PG_CLUSTER restart -m $mode: postmaster pid $old -> $new"
}

# --- the run ----------------------------------------------------------------
chaos_run() {
  trap 'chaos_down' EXIT
  trap 'exit 130' INT TERM
  chaos_down # whatever an interrupted earlier run left
  rm -rf "$STATE_DIR"
  mkdir -p "$STATE_DIR" "$LOG_DIR"
  local port
  for port in "$CHAOS_REDIS_PORT" "$CHAOS_BROKER_PORT" "$CHAOS_HTTP_PORT" "$CHAOS_LAMBDA_PORT"; do
    if wait_for_port 127.0.0.1 "$port" 0; then chaos_log "port $port is in use by something else; set the CHAOS_*_PORT variables"; return 1; fi
  done

  chaos_log "own stack: PostgreSQL :$CHAOS_PG_PORT ($CHAOS_PG_CLUSTER), Redis :$CHAOS_REDIS_PORT, broker :$CHAOS_BROKER_PORT, Lambda host :$CHAOS_LAMBDA_PORT, gateway :$CHAOS_HTTP_PORT (state $STATE_DIR)"
  ensure_rust_packages
  chaos_pg_up
  chaos_redis_start
  ensure_broker
  # The broker is stopped by its pid file (a fault kills it); not a job to report on.
  disown -a
  (cd "$REPO_ROOT" && ops seed >/dev/null)
  # start_runtime builds every binary, the chaos one included.
  # Frequent schedules (order relay, verification sweep) and a short
  # verification lifetime, so a run quiesces within its bound.
  export PAYSTREAM_SCHEDULE_EVERY_S=2 VERIFY_TTL=30s
  start_runtime
  printf '%s\n' "${RUNTIME_PIDS[@]}" >"$STATE_DIR/runtime.pids"

  # Overridable only to show that a run whose faults do not happen fails
  # (the chaos binary confirms each fault itself).
  export CHAOS_FAULT_COMMAND="${CHAOS_FAULT_COMMAND:-bash $REPO_ROOT/scripts/chaos.sh fault}"
  cd "$REPO_ROOT"
  if ! timeout --kill-after=10 "$CHAOS_TIMEOUT_S" "${BIN_DIR:-$CARGO_TARGET_DIR/debug}/chaos"; then
    chaos_log "chaos run FAILED (table above); logs in $LOG_DIR; last lines of each:"
    for f in "$LOG_DIR"/*.log; do echo "--- $f" >&2; tail -8 "$f" >&2; done
    return 1
  fi
}

# Sourcing this file (tests) defines the functions and runs nothing.
[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0
case "${1:-run}" in
  run) chaos_run ;;
  fault)
    case "${2:-}" in
      function) fault_function "${3:-}" ;;
      broker) fault_broker ;;
      redis) fault_redis ;;
      postgres) fault_postgres "${3:-fast}" ;;
      *) echo "usage: $0 fault function [NAME]|broker|redis|postgres [MODE]" >&2; exit 2 ;;
    esac
    ;;
  *) echo "usage: $0 [run] | fault KIND [ARG]" >&2; exit 2 ;;
esac
