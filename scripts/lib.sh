# Shared by every paystream script: locations, tool installation and the
# local services. Source it; do not run it.
# shellcheck shell=bash

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Everything installed or generated lives outside the clone, so a fresh
# clone (CI) reuses builds and tools, and the work tree stays clean.
PAYSTREAM_CACHE="${PAYSTREAM_CACHE:-$HOME/.cache/paystream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PAYSTREAM_CACHE/target}"
TOOLS_ROOT="$PAYSTREAM_CACHE/tools"
VENV="$PAYSTREAM_CACHE/venv"
STATE_DIR="$PAYSTREAM_CACHE/state"
mkdir -p "$TOOLS_ROOT" "$STATE_DIR"

TANSU_VERSION="0.6.0"
export PAYSTREAM_TANSU_BIN="$TOOLS_ROOT/bin/tansu"
BROKER_HOST="127.0.0.1"
BROKER_PORT="${PAYSTREAM_BROKER_PORT:-9092}"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-$BROKER_HOST:$BROKER_PORT}"

PAYSTREAM_DB="${PAYSTREAM_DB:-paystream}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/$PAYSTREAM_DB}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export PAYSTREAM_ADMIN_PASSWORD="${PAYSTREAM_ADMIN_PASSWORD:-admin-local-only}"
export SAM_CLI_TELEMETRY=0

# Topics and their partition counts (payment-stream is keyed by user id,
# order-stream by order id; 3 partitions let three consumers share a topic).
TOPICS=(payment-stream order-stream payment-stream.dlq order-stream.dlq)
TOPIC_PARTITIONS=3

# Python tools, pinned, in one virtualenv (cargo-lambda then finds zig;
# openapi-spec-validator checks the committed openapi.json, and schemathesis
# tests the running API against it (scripts/schemathesis.sh);
# cmake builds librdkafka for the arm64 cross-compile).
PY_TOOLS=(cargo-lambda==1.9.2 aws-sam-cli==1.170.0 cfn-lint==1.58.0 cmake==4.4.4 openapi-spec-validator==0.9.0 schemathesis==4.32.5)

log() { printf '\033[1m[paystream]\033[0m %s\n' "$*" >&2; }

wait_for_port() { # host port seconds
  local deadline=$((SECONDS + $3))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    if ((SECONDS >= deadline)); then return 1; fi
    sleep 0.2
  done
}

ensure_rust_packages() {
  # Debian packages some crates need to build (librdkafka's configure needs
  # make and a C toolchain, which this machine type has).
  local missing=()
  for bin in make cc pkg-config psql redis-cli sqlite3; do
    command -v "$bin" >/dev/null || missing+=("$bin")
  done
  if ((${#missing[@]})); then
    log "installing build tools for: ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq build-essential pkg-config postgresql-client redis-tools sqlite3 >/dev/null
  fi
}

ensure_postgres() {
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done
    pg_isready -h 127.0.0.1 -p 5432 -q || { log "PostgreSQL did not start"; return 1; }
  fi
}

ensure_redis() {
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    log "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.2; done
    redis-cli -h 127.0.0.1 ping >/dev/null || { log "Redis did not start"; return 1; }
  fi
}

ensure_tansu_installed() {
  if [[ -x "$PAYSTREAM_TANSU_BIN" ]] && "$PAYSTREAM_TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return 0
  fi
  log "installing the tansu broker $TANSU_VERSION into $TOOLS_ROOT (about 13 minutes on 2 cores)"
  # Its own target dir: the broker's build must not evict the project's.
  CARGO_TARGET_DIR="$PAYSTREAM_CACHE/tansu-target" \
    cargo install --locked tansu --version "$TANSU_VERSION" --features libsql --root "$TOOLS_ROOT"
  rm -rf "$PAYSTREAM_CACHE/tansu-target"
}

broker_pid() { cat "$STATE_DIR/tansu.pid" 2>/dev/null || true; }

ensure_broker() {
  ensure_tansu_installed
  if wait_for_port "$BROKER_HOST" "$BROKER_PORT" 0; then
    log "broker already listening on $BROKER_HOST:$BROKER_PORT"
  else
    log "starting the tansu broker on $BROKER_HOST:$BROKER_PORT (SQLite: $STATE_DIR/tansu.db)"
    # The SQLite path is relative to the directory the broker starts in.
    # `exec` makes the subshell become the broker, so $! is the broker's pid;
    # nothing of ours keeps its output pipe open.
    (cd "$STATE_DIR" && exec "$PAYSTREAM_TANSU_BIN" broker \
      --listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
      --advertised-listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
      --storage-engine "sqlite://tansu.db") >"$STATE_DIR/tansu.log" 2>&1 </dev/null &
    echo $! >"$STATE_DIR/tansu.pid"
    wait_for_port "$BROKER_HOST" "$BROKER_PORT" 30 || { log "broker did not start; see $STATE_DIR/tansu.log"; tail -20 "$STATE_DIR/tansu.log" >&2; return 1; }
  fi
  local existing
  existing="$("$PAYSTREAM_TANSU_BIN" topic list --broker "tcp://$BROKER_HOST:$BROKER_PORT")"
  for topic in "${TOPICS[@]}"; do
    if ! grep -qF "\"name\":\"$topic\"" <<<"$existing"; then
      log "creating topic $topic ($TOPIC_PARTITIONS partitions)"
      "$PAYSTREAM_TANSU_BIN" topic create "$topic" --partitions "$TOPIC_PARTITIONS" \
        --broker "tcp://$BROKER_HOST:$BROKER_PORT" >/dev/null
    fi
  done
}

stop_broker() {
  local pid
  pid="$(broker_pid)"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    log "stopping the broker (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE_DIR/tansu.pid"
}

# tansu 0.6.0 can leave a consumer group "Forming" under a leader that is no
# longer a member (seen here about once in ten poller restarts, and after a
# broker restart under load): a LeaveGroup of the leader while the group is
# Forming removes it from the members but keeps it as the leader, and then no
# member is ever assigned partitions again (DeleteGroups answers OK and
# changes nothing). The poller is immune: it joins no group (it assigns
# itself the partitions and commits to the group as a simple consumer), so
# such a group only matters to other members. tansu drops a departed leader
# when it loads a group from its SQLite file, so restarting the broker
# repairs it; the membership row is dropped as well (committed offsets are
# another table and are kept).
STUCK_GROUPS_SQL="SELECT d.id, cg.name FROM consumer_group_detail d JOIN consumer_group cg ON cg.id = d.consumer_group
  WHERE json_extract(d.detail, '\$.state.Forming.leader') IS NOT NULL
    AND json_type(d.detail, '\$.members.\"' || json_extract(d.detail, '\$.state.Forming.leader') || '\"') IS NULL"

# Reports stuck groups; with PAYSTREAM_REPAIR_STUCK_GROUPS=1 it also repairs
# them (restarts the broker without their membership state). The poller does
# not need it, so by default nothing restarts the broker under running tools.
repair_stuck_groups() {
  local db="$STATE_DIR/tansu.db" stuck ids
  [[ -f "$db" ]] || return 0
  stuck="$(sqlite3 -readonly "$db" "$STUCK_GROUPS_SQL")"
  [[ -n "$stuck" ]] || return 0
  if [[ "${PAYSTREAM_REPAIR_STUCK_GROUPS:-0}" != 1 ]]; then
    log "consumer groups stuck in the broker (Forming under a departed leader): $(cut -d'|' -f2 <<<"$stuck" | paste -sd' '); the poller is not affected (it joins no group); PAYSTREAM_REPAIR_STUCK_GROUPS=1 repairs them"
    return 0
  fi
  log "consumer groups stuck in the broker: $(cut -d'|' -f2 <<<"$stuck" | paste -sd' '); restarting it without their membership state"
  [[ -n "$(broker_pid)" ]] || { log "the broker was not started by these scripts; stop it, then run again"; return 1; }
  stop_broker
  ids="$(cut -d'|' -f1 <<<"$stuck" | paste -sd,)"
  sqlite3 "$db" "DELETE FROM consumer_group_detail WHERE id IN ($ids)"
  ensure_broker
}

ensure_database() {
  if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PAYSTREAM_DB'" | grep -q 1; then
    log "creating database $PAYSTREAM_DB"
    psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE \"$PAYSTREAM_DB\"" >/dev/null
  fi
}

# The Rust standard library for Lambda's arm64 (sam build cross-compiles).
ensure_arm64_target() {
  if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    log "adding the aarch64-unknown-linux-gnu Rust target"
    rustup target add aarch64-unknown-linux-gnu
  fi
}

ensure_venv() {
  local stamp="$VENV/.paystream-tools"
  if [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "${PY_TOOLS[*]}" ]]; then
    return 0
  fi
  log "installing ${PY_TOOLS[*]} into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_TOOLS[@]}"
  echo "${PY_TOOLS[*]}" >"$stamp"
}

# Headless Chromium (Debian) and playwright-core (npm, pinned) for the
# browser test; never a browser download of Playwright's own.
PLAYWRIGHT_CORE_VERSION="1.65.1"
export PAYSTREAM_NODE_MODULES="$PAYSTREAM_CACHE/node/node_modules"
export PAYSTREAM_CHROMIUM="${PAYSTREAM_CHROMIUM:-/usr/bin/chromium}"

ensure_browser() {
  if [[ ! -x "$PAYSTREAM_CHROMIUM" ]]; then
    log "installing Debian's chromium for the browser test"
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  fi
  command -v node >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
  if [[ ! -f "$PAYSTREAM_NODE_MODULES/playwright-core/package.json" ]] ||
     ! grep -q "\"version\": \"$PLAYWRIGHT_CORE_VERSION\"" "$PAYSTREAM_NODE_MODULES/playwright-core/package.json"; then
    log "installing playwright-core $PLAYWRIGHT_CORE_VERSION"
    mkdir -p "$PAYSTREAM_CACHE/node"
    npm install --silent --no-audit --no-fund --prefix "$PAYSTREAM_CACHE/node" "playwright-core@$PLAYWRIGHT_CORE_VERSION" >/dev/null
  fi
}

ops() { cargo run -q --locked -p paystream-ops -- "$@"; }

# --- the local serverless runtime -------------------------------------------
export PAYSTREAM_HTTP_PORT="${PAYSTREAM_HTTP_PORT:-3000}"
export PAYSTREAM_LAMBDA_PORT="${PAYSTREAM_LAMBDA_PORT:-9000}"
LAMBDA_PORT="$PAYSTREAM_LAMBDA_PORT"
export LAMBDA_ENDPOINT="http://127.0.0.1:$LAMBDA_PORT"
export PUBLIC_BASE_URL="${PUBLIC_BASE_URL:-http://127.0.0.1:$PAYSTREAM_HTTP_PORT}"
export PAYSTREAM_TEMPLATE="$REPO_ROOT/template.yaml"
# Which build the local runtime runs (debug or release), and where it is.
export PAYSTREAM_PROFILE="${PAYSTREAM_PROFILE:-debug}"
case "$PAYSTREAM_PROFILE" in
  debug) PROFILE_FLAGS=() ;;
  release) PROFILE_FLAGS=(--release) ;;
  *) log "PAYSTREAM_PROFILE must be debug or release, not $PAYSTREAM_PROFILE"; exit 1 ;;
esac
BIN_DIR="$CARGO_TARGET_DIR/$PAYSTREAM_PROFILE"
LOG_DIR="$STATE_DIR/logs"
RUNTIME_PIDS=()

# Starts a background process of ours, logging to $LOG_DIR/NAME.log.
start_bg() { # name command...
  local name=$1; shift
  mkdir -p "$LOG_DIR"
  "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null &
  RUNTIME_PIDS+=($!)
  log "$name started (pid $!, log $LOG_DIR/$name.log)"
}

# Waits until a process of ours listens on a loopback port; fails at once if
# the process exits first.
wait_for_listener() { # pid port seconds
  local deadline=$((SECONDS + $3))
  until (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; do
    kill -0 "$1" 2>/dev/null || return 1
    if ((SECONDS >= deadline)); then return 1; fi
    sleep 0.2
  done
}

# Every function under the local Lambda host (`lambda-host`: a process per
# function, PAYSTREAM_INSTANCES each, replaced when it dies; the Invoke API
# on $PAYSTREAM_LAMBDA_PORT once all are ready), the gateway on
# $PAYSTREAM_HTTP_PORT and the poller.
start_runtime() {
  log "building the functions and local tools ($PAYSTREAM_PROFILE)"
  (cd "$REPO_ROOT" && cargo build -q --locked --workspace --bins "${PROFILE_FLAGS[@]}")
  cd "$REPO_ROOT"
  start_bg functions "$BIN_DIR/lambda-host"
  wait_for_listener "${RUNTIME_PIDS[-1]}" "$LAMBDA_PORT" 60 || { log "the Lambda host did not start"; tail -20 "$LOG_DIR/functions.log" >&2; return 1; }
  start_bg gateway "$BIN_DIR/gateway"
  local gateway_pid="${RUNTIME_PIDS[-1]}"
  repair_stuck_groups
  start_bg poller "$BIN_DIR/poller"
  wait_for_listener "$gateway_pid" "$PAYSTREAM_HTTP_PORT" 30 || { log "gateway did not start"; tail -20 "$LOG_DIR/gateway.log" >&2; return 1; }
}

# SIGTERM, then SIGKILL after a bound. (SIGINT would not do: background
# jobs of a script start with SIGINT ignored.)
stop_pids() { # pid...
  local pid
  (($#)) || return 0
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.2
  done
  for pid in "$@"; do kill -9 "$pid" 2>/dev/null || true; done
}

# Stops what start_runtime started: the gateway and the poller first (the
# poller finishes its batch, which still needs the functions, and closes its
# consumers), then the Lambda host, which stops its function processes.
stop_runtime() {
  ((${#RUNTIME_PIDS[@]})) || return 0
  stop_pids "${RUNTIME_PIDS[@]:1}"
  stop_pids "${RUNTIME_PIDS[0]}"
  RUNTIME_PIDS=()
}
