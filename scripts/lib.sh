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
# Where the functions run locally: `host` (the Lambda host, a process per
# function) or `sam` (`sam local start-lambda`, a container per function from
# the `sam build` artifacts). The sam mode keeps its own state, broker and
# database, so the two never see each other's events.
export PAYSTREAM_LAMBDA="${PAYSTREAM_LAMBDA:-host}"
case "$PAYSTREAM_LAMBDA" in
  host) STATE_DIR="${PAYSTREAM_STATE_DIR:-$PAYSTREAM_CACHE/state}" ;;
  sam)
    STATE_DIR="${PAYSTREAM_STATE_DIR:-$PAYSTREAM_CACHE/state-sam}"
    PAYSTREAM_DB="${PAYSTREAM_DB:-paystream_sam}"
    # sam local knows functions by logical id (PayFunction), not by binary.
    export PAYSTREAM_INVOKE_NAMES=logical-id
    ;;
  *) echo "PAYSTREAM_LAMBDA must be host or sam, not $PAYSTREAM_LAMBDA" >&2; exit 2 ;;
esac
mkdir -p "$TOOLS_ROOT" "$STATE_DIR"

# The Kafka-protocol broker: nisshi (tansu renamed, with consumer-group
# fixes since tansu 0.6.0; see README "The broker").
BROKER_CRATE="nisshi"
BROKER_VERSION="0.8.1"
export PAYSTREAM_BROKER_BIN="$TOOLS_ROOT/bin/$BROKER_CRATE"
BROKER_HOST="${PAYSTREAM_BROKER_HOST:-127.0.0.1}"
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

ensure_broker_installed() {
  if [[ -x "$PAYSTREAM_BROKER_BIN" ]] && "$PAYSTREAM_BROKER_BIN" --version 2>/dev/null | grep -qx "$BROKER_CRATE $BROKER_VERSION"; then
    return 0
  fi
  log "installing the $BROKER_CRATE broker $BROKER_VERSION into $TOOLS_ROOT (about 10 minutes on 2 cores)"
  # Its own target dir: the broker's build must not evict the project's.
  # --ignore-rust-version: its HTTP dependency (rama 0.4.0) declares Rust
  # 1.96, one release newer than this machine's toolchain, and builds with
  # it; only the SQLite engine (libsql) is compiled in.
  CARGO_TARGET_DIR="$PAYSTREAM_CACHE/broker-target" \
    cargo install --locked --ignore-rust-version "$BROKER_CRATE" --version "$BROKER_VERSION" \
      --no-default-features --features libsql --root "$TOOLS_ROOT"
  rm -rf "$PAYSTREAM_CACHE/broker-target"
}

# On a new machine the broker's build (about 10 minutes) can run beside
# another long build: each leaves a core idle at times (build scripts, the
# last crates, linking), so together they end sooner than one after the
# other. Nothing happens when the broker is installed already.
# It runs in its own session, so stop_broker_install (the callers' EXIT trap)
# stops cargo and its compilers with it when the script fails or is stopped.
BROKER_INSTALL_PID=""
start_broker_install() {
  BROKER_INSTALL_LOG="$PAYSTREAM_CACHE/broker-install.log"
  setsid bash -c 'source "$1/scripts/lib.sh" && ensure_broker_installed' _ "$REPO_ROOT" >"$BROKER_INSTALL_LOG" 2>&1 </dev/null &
  BROKER_INSTALL_PID=$!
}
wait_broker_install() {
  local pid=$BROKER_INSTALL_PID
  BROKER_INSTALL_PID=""
  wait "$pid" || { log "installing the broker failed:"; tail -20 "$BROKER_INSTALL_LOG" >&2; return 1; }
}
stop_broker_install() {
  [[ -n "$BROKER_INSTALL_PID" ]] || return 0
  kill -- "-$BROKER_INSTALL_PID" 2>/dev/null || true
  BROKER_INSTALL_PID=""
}

# tansu.pid: a broker these scripts started before they ran nisshi.
broker_pid() { cat "$STATE_DIR/broker.pid" 2>/dev/null || cat "$STATE_DIR/tansu.pid" 2>/dev/null || true; }

ensure_broker() {
  ensure_broker_installed
  if wait_for_port "$BROKER_HOST" "$BROKER_PORT" 0; then
    log "broker already listening on $BROKER_HOST:$BROKER_PORT"
  else
    log "starting the $BROKER_CRATE broker on $BROKER_HOST:$BROKER_PORT (SQLite: $STATE_DIR/broker.db)"
    # The SQLite path is relative to the directory the broker starts in.
    # `exec` makes the subshell become the broker, so $! is the broker's pid;
    # nothing of ours keeps its output pipe open.
    (cd "$STATE_DIR" && exec "$PAYSTREAM_BROKER_BIN" broker \
      --listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
      --advertised-listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
      --storage-engine "sqlite://broker.db") >"$STATE_DIR/broker.log" 2>&1 </dev/null &
    echo $! >"$STATE_DIR/broker.pid"
    wait_for_port "$BROKER_HOST" "$BROKER_PORT" 30 || { log "broker did not start; see $STATE_DIR/broker.log"; tail -20 "$STATE_DIR/broker.log" >&2; return 1; }
  fi
  local existing
  existing="$("$PAYSTREAM_BROKER_BIN" topic list --broker "tcp://$BROKER_HOST:$BROKER_PORT")"
  for topic in "${TOPICS[@]}"; do
    if ! grep -qF "\"name\":\"$topic\"" <<<"$existing"; then
      log "creating topic $topic ($TOPIC_PARTITIONS partitions)"
      "$PAYSTREAM_BROKER_BIN" topic create "$topic" --partitions "$TOPIC_PARTITIONS" \
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
  rm -f "$STATE_DIR/broker.pid" "$STATE_DIR/tansu.pid"
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
# The operator commands, in the runtime's build (with PAYSTREAM_PROFILE=release
# a debug build of them would be a second build of the workspace's crates).
ops() { cargo run -q --locked "${PROFILE_FLAGS[@]}" -p paystream-ops -- "$@"; }
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
  wait_for_listener_at "$1" 127.0.0.1 "$2" "$3"
}
wait_for_listener_at() { # pid host port seconds
  local deadline=$((SECONDS + $4))
  until (exec 3<>"/dev/tcp/$2/$3") 2>/dev/null; do
    kill -0 "$1" 2>/dev/null || return 1
    if ((SECONDS >= deadline)); then return 1; fi
    sleep 0.2
  done
}

# This machine's PostgreSQL runs with autovacuum off; production's (RDS, or
# any default install) runs it. Its ANALYZE does more than keep statistics:
# it invalidates the plans the functions prepared while the tables were
# empty. Every batch statement is prepared once per connection
# (`prepare_cached`), and a generic plan chosen when a table looked empty
# (a whole-table scan) otherwise stays for the connection's life: one
# `bench gateway` run against a never-analysed project database did 4,488
# whole-table scans of idempotency_keys (58 M rows read). So while the local
# runtime runs, this stand-in applies autovacuum's default thresholds to the
# project's database every PAYSTREAM_AUTOVACUUM_EVERY_S (default 10; its
# naptime is 60 s, but a local run is minutes long). Nothing runs when the
# server's own autovacuum is on.
AUTOVACUUM_STANDIN_SQL="SELECT format(CASE
    WHEN n_dead_tup > 50 + 0.2 * n_live_tup OR n_ins_since_vacuum > 1000 + 0.2 * n_live_tup
    THEN 'VACUUM (ANALYZE) %I.%I' ELSE 'ANALYZE %I.%I' END, schemaname, relname)
  FROM pg_stat_user_tables
  WHERE n_dead_tup > 50 + 0.2 * n_live_tup OR n_ins_since_vacuum > 1000 + 0.2 * n_live_tup
     OR n_mod_since_analyze > 50 + 0.1 * n_live_tup"
autovacuum_standin() {
  local every_s="${PAYSTREAM_AUTOVACUUM_EVERY_S:-10}"
  # Bounded by the runtime's life: stop_runtime ends it with the rest.
  while sleep "$every_s"; do
    # A statement that fails (PostgreSQL restarting, a table locked) is
    # tried again on the next round.
    printf '%s \\gexec\n' "$AUTOVACUUM_STANDIN_SQL" | psql -X -q "$DATABASE_URL" >/dev/null || true
  done
}
start_autovacuum_standin() {
  if [[ "$(psql -X -At "$DATABASE_URL" -c 'SHOW autovacuum' 2>/dev/null)" == off ]]; then
    start_bg autovacuum autovacuum_standin
  fi
}

# Every function under the local Lambda host (`lambda-host`: a process per
# function, PAYSTREAM_INSTANCES each, replaced when it dies; the Invoke API
# on $PAYSTREAM_LAMBDA_PORT once all are ready), the gateway on
# $PAYSTREAM_HTTP_PORT and the poller.
start_runtime() {
  if [[ "$PAYSTREAM_LAMBDA" == sam ]]; then start_runtime_sam; return; fi
  log "building the functions and local tools ($PAYSTREAM_PROFILE)"
  (cd "$REPO_ROOT" && cargo build -q --locked --workspace --bins "${PROFILE_FLAGS[@]}")
  cd "$REPO_ROOT"
  start_bg functions "$BIN_DIR/lambda-host"
  wait_for_listener "${RUNTIME_PIDS[-1]}" "$LAMBDA_PORT" 60 || { log "the Lambda host did not start"; tail -20 "$LOG_DIR/functions.log" >&2; return 1; }
  start_bg gateway "$BIN_DIR/gateway"
  local gateway_pid="${RUNTIME_PIDS[-1]}"
  start_bg poller "$BIN_DIR/poller"
  start_autovacuum_standin
  wait_for_listener "$gateway_pid" "$PAYSTREAM_HTTP_PORT" 30 || { log "gateway did not start"; tail -20 "$LOG_DIR/gateway.log" >&2; return 1; }
}

# The same runtime with the functions in `sam local start-lambda`'s
# containers (warm, one per function, started at once: the arm64 emulator
# under qemu is slow to start) instead of the Lambda host. Needs ensure_docker
# and use_docker_bridge first.
start_runtime_sam() {
  : "${DOCKER_BRIDGE_IP:?ensure_docker and use_docker_bridge come first}"
  # The same build as the host mode's (no rebuild after it), for the gateway,
  # the poller and the demo; the functions run from `sam build`'s output.
  log "building the local tools ($PAYSTREAM_PROFILE)"
  (cd "$REPO_ROOT" && cargo build -q --locked --workspace --bins "${PROFILE_FLAGS[@]}")
  # test.sh has just built them (PAYSTREAM_SAM_BUILT=1).
  [[ "${PAYSTREAM_SAM_BUILT:-0}" == 1 ]] || ensure_sam_build
  prepare_sam_local
  cd "$REPO_ROOT"
  SAM_CONTAINERS_BEFORE=(start-lambda $(docker ps -aq --no-trunc --filter label=sam.cli.container.type=lambda))
  start_bg functions "$VENV/bin/sam" local start-lambda "${SAM_LOCAL_ARGS[@]}" \
    --host 127.0.0.1 --port "$LAMBDA_PORT" --warm-containers EAGER
  local functions_pid="${RUNTIME_PIDS[-1]}"
  wait_for_listener "$functions_pid" "$LAMBDA_PORT" 600 || { log "sam local start-lambda did not start"; tail -20 "$LOG_DIR/functions.log" >&2; return 1; }
  start_bg gateway "$BIN_DIR/gateway"
  local gateway_pid="${RUNTIME_PIDS[-1]}"
  start_bg poller "$BIN_DIR/poller"
  start_autovacuum_standin
  wait_for_listener "$gateway_pid" "$PAYSTREAM_HTTP_PORT" 30 || { log "gateway did not start"; tail -20 "$LOG_DIR/gateway.log" >&2; return 1; }
}

# The redelivery check restarts Redis; until the account function's Redis
# connection is back, log-ins answer 503 (the failed-log-in limiter fails
# closed), as on AWS after an ElastiCache failover. Wait for that (bounded).
wait_for_login() {
  local code=""
  for _ in $(seq 1 60); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'content-type: application/json' \
      -d '{"username":"merchant_demo","password":"demo-password"}' "$PUBLIC_BASE_URL/auth/login" || true)"
    [[ "$code" == 200 ]] && return 0
    sleep 0.5
  done
  log "log-in still answers $code 30 s after Redis came back"
  return 1
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
  if ((${#RUNTIME_PIDS[@]})); then
    stop_pids "${RUNTIME_PIDS[@]:1}"
    stop_pids "${RUNTIME_PIDS[0]}"
    RUNTIME_PIDS=()
  fi
  # SAM removes its warm containers on Ctrl-C only; a script's background
  # job cannot get one, so remove what this run's start-lambda left.
  if ((${#SAM_CONTAINERS_BEFORE[@]})) && docker_answers; then
    local id
    for id in $(docker ps -aq --no-trunc --filter label=sam.cli.container.type=lambda); do
      [[ " ${SAM_CONTAINERS_BEFORE[*]} " == *" $id "* ]] || docker rm -f "$id" >/dev/null 2>&1 || true
    done
    SAM_CONTAINERS_BEFORE=()
  fi
  if ((${#FORWARDER_PIDS[@]})); then
    stop_pids "${FORWARDER_PIDS[@]}"
    FORWARDER_PIDS=()
  fi
}

# --- sam local: the Docker engine, arm64 emulation, the Lambda base image ----
# `sam local invoke` and `sam local start-lambda` run each function's arm64
# bootstrap (the `sam build` artifact that deploys) in a container. An engine
# that already answers (DOCKER_HOST, or Docker on a laptop) is used as it is;
# otherwise these scripts start their own dockerd, with its own socket, data
# and bridge, and stop it again (stop_docker).
SAM_BUILD_DIR="$PAYSTREAM_CACHE/sam-build"
DOCKER_DATA_DIR="$PAYSTREAM_CACHE/docker"
PAYSTREAM_DOCKER_SOCK="/run/paystream-docker.sock"
DOCKERD_PID_FILE="$PAYSTREAM_CACHE/dockerd.pid"
# The image SAM builds its emulator image on. Built here from Debian
# packages, as no registry is reachable; set PAYSTREAM_SAM_INVOKE_IMAGE= (empty)
# where the registry is, and SAM pulls the official
# public.ecr.aws/lambda/provided:al2023-arm64 itself.
LAMBDA_BASE_IMAGE="paystream/lambda-provided:al2023-arm64"
export PAYSTREAM_SAM_INVOKE_IMAGE="${PAYSTREAM_SAM_INVOKE_IMAGE-$LAMBDA_BASE_IMAGE}"
DOCKER_PACKAGES=(docker.io iptables qemu-user-static binfmt-support socat)

docker_answers() { docker info >/dev/null 2>&1; }

ensure_docker() {
  local missing=() package
  for package in "${DOCKER_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # arm64 executables (the bootstraps, the emulator, the base image's shell)
  # run under qemu; the F flag loads the interpreter now, so it also works
  # inside containers.
  if [[ ! -f /proc/sys/fs/binfmt_misc/status ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  if [[ ! -f /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    update-binfmts --enable qemu-aarch64
  fi
  if [[ -n "${DOCKER_HOST:-}" && "$DOCKER_HOST" != "unix://$PAYSTREAM_DOCKER_SOCK" ]]; then
    docker_answers || { log "DOCKER_HOST=$DOCKER_HOST does not answer"; return 1; }
    log "using the Docker engine at DOCKER_HOST=$DOCKER_HOST"
    return 0
  fi
  if [[ -z "${DOCKER_HOST:-}" ]] && docker_answers; then
    # An engine with the userland proxy (Docker's default) may answer SAM
    # before an emulated arm64 container listens; see below.
    log "using the Docker engine that is already running"
    return 0
  fi
  export DOCKER_HOST="unix://$PAYSTREAM_DOCKER_SOCK"
  if docker_answers; then return 0; fi  # ours, started by another run: left to it
  log "starting dockerd (socket $PAYSTREAM_DOCKER_SOCK, data $DOCKER_DATA_DIR)"
  mkdir -p "$DOCKER_DATA_DIR"
  # No userland proxy: a published port then refuses connections until the
  # container listens, so SAM waits for the emulator instead of sending the
  # event to a proxy that accepted it and then drops it (the arm64 emulator
  # under qemu takes longer to start than SAM's retries allow).
  dockerd --storage-driver=overlay2 --data-root "$DOCKER_DATA_DIR" \
    --exec-root /run/paystream-docker --pidfile "$DOCKERD_PID_FILE" \
    -H "$DOCKER_HOST" --userland-proxy=false >"$PAYSTREAM_CACHE/dockerd.log" 2>&1 </dev/null &
  DOCKERD_STARTED=1
  local _
  for _ in $(seq 1 100); do docker_answers && return 0; sleep 0.2; done
  log "dockerd did not start; see $PAYSTREAM_CACHE/dockerd.log"
  tail -20 "$PAYSTREAM_CACHE/dockerd.log" >&2
  return 1
}

# Stops the dockerd that this script started (and so its containers); one
# that was running before is left running.
stop_docker() {
  local pid
  [[ "${DOCKERD_STARTED:-0}" == 1 ]] || return 0
  pid="$(cat "$DOCKERD_PID_FILE" 2>/dev/null || true)"
  # A pid file outlives a reboot; the pid may be another process's by now.
  [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 0
  log "stopping dockerd (pid $pid)"
  kill "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}

# The address containers reach this machine at: the gateway of Docker's
# default bridge (the bridge of the engine in use; nothing else). An engine
# that created its bridge itself (the first start on a machine) reports no
# gateway in the network's IPAM configuration; the bridge interface then
# carries it.
docker_bridge_ip() {
  local ip bridge
  ip="$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' | tr ' ' '\n' | grep -m1 -E '^[0-9]+(\.[0-9]+){3}$' || true)"
  if [[ -z "$ip" ]]; then
    bridge="$(docker network inspect bridge -f '{{index .Options "com.docker.network.bridge.name"}}')"
    ip="$(ip -4 -o addr show dev "${bridge:-docker0}" 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -1)"
  fi
  [[ "$ip" =~ ^[0-9]+(\.[0-9]+){3}$ ]] || { log "no IPv4 gateway on Docker's default bridge (docker network inspect bridge)"; return 1; }
  echo "$ip"
}

# The Lambda base image from Debian's arm64 packages (see
# scripts/lambda-base/Dockerfile); rebuilt when the recipe changes.
LAMBDA_BASE_PACKAGES=(libc6:arm64 libgcc-s1:arm64 busybox-static:arm64 ca-certificates)
ensure_lambda_base_image() {
  [[ "$PAYSTREAM_SAM_INVOKE_IMAGE" == "$LAMBDA_BASE_IMAGE" ]] || return 0
  local recipe
  recipe="$(cat "$REPO_ROOT/scripts/lambda-base/Dockerfile"; echo "${LAMBDA_BASE_PACKAGES[*]}"; declare -f ensure_lambda_base_image)"
  recipe="$(sha256sum <<<"$recipe" | cut -c1-16)"
  if [[ "$(docker image inspect -f '{{index .Config.Labels "paystream.recipe"}}' "$LAMBDA_BASE_IMAGE" 2>/dev/null)" == "$recipe" ]]; then
    return 0
  fi
  log "building the Lambda base image $LAMBDA_BASE_IMAGE from Debian packages"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
  fi
  apt-get update -qq
  local work="$PAYSTREAM_CACHE/lambda-base"
  rm -rf "$work" && mkdir -p "$work/debs" "$work/rootfs"
  # apt's sandbox user cannot write here; the download itself is checked.
  (cd "$work/debs" && apt-get download -qq "${LAMBDA_BASE_PACKAGES[@]}" 2> >(grep -v "Download is performed unsandboxed" >&2))
  local deb
  for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/rootfs"; done
  local root="$work/rootfs"
  # Amazon Linux's places: /lib64 for the loader, the CA bundle under /etc/pki.
  mkdir -p "$root/lib64" "$root/etc/pki/tls/certs" "$root/etc/ssl/certs" "$root/tmp" \
    "$root/var/task" "$root/var/runtime" "$root/var/rapid" "$root/opt" "$root/usr/bin"
  ln -sf ../lib/aarch64-linux-gnu/ld-linux-aarch64.so.1 "$root/lib64/ld-linux-aarch64.so.1"
  cat "$root"/usr/share/ca-certificates/mozilla/*.crt >"$root/etc/pki/tls/certs/ca-bundle.crt"
  ln -sf ../../pki/tls/certs/ca-bundle.crt "$root/etc/ssl/certs/ca-bundle.crt"
  ln -sf ../../pki/tls/certs/ca-bundle.crt "$root/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/lintian" "$root/usr/lib/aarch64-linux-gnu/gconv"
  local tool
  for tool in sh mv chmod cp rm ls cat mkdir env; do ln -sf busybox "$root/bin/$tool"; done
  echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
  chmod 1777 "$root/tmp"
  cp "$REPO_ROOT/scripts/lambda-base/Dockerfile" "$work/Dockerfile"
  docker build -q --platform linux/arm64 --label "paystream.recipe=$recipe" -t "$LAMBDA_BASE_IMAGE" "$work" >/dev/null
  [[ "$(docker image inspect -f '{{.Architecture}}' "$LAMBDA_BASE_IMAGE")" == arm64 ]] || { log "$LAMBDA_BASE_IMAGE is not an arm64 image"; return 1; }
}

# sam build: an arm64 bootstrap for every function (cargo-lambda + zig,
# offline) in $SAM_BUILD_DIR: what `sam local` runs here.
#
# A debug build (SAM_BUILD_MODE=debug, SAM's own switch: `cargo lambda
# build` without --release), unless the caller sets SAM_BUILD_MODE itself.
# The release profile's thin LTO re-optimises every dependency once per
# function, nine times: on a new 2-core machine the release `sam build`
# alone took over 50 min (2026-12-03), more than the rest of the test
# command together. `sam local` checks the template, the containers and
# the events, which a debug build of the same code checks as well; what
# deploys is `sam build` run as README's "Deploying to AWS" says, release.
ensure_sam_build() {
  ensure_arm64_target
  local mode="${SAM_BUILD_MODE-debug}"
  log "sam build: an arm64 bootstrap for every function (${mode:-release} build)"
  (cd "$REPO_ROOT" && PATH="$VENV/bin:$PATH" SAM_BUILD_MODE="$mode" "$VENV/bin/sam" build --template-file template.yaml --build-dir "$SAM_BUILD_DIR")
  local functions=0 bootstrap expected
  for bootstrap in "$SAM_BUILD_DIR"/*/bootstrap; do
    # ELF e_machine (bytes 18-19) is 0xb7 0x00 for aarch64.
    [[ "$(od -An -tx1 -j18 -N2 "$bootstrap" | tr -d ' ')" == "b700" ]] || { log "$bootstrap is not an arm64 executable"; return 1; }
    functions=$((functions + 1))
  done
  expected=$(grep -c 'Type: AWS::Serverless::Function' "$REPO_ROOT/template.yaml")
  [[ "$functions" -eq "$expected" ]] || { log "sam build produced $functions bootstraps, the template has $expected functions"; return 1; }
  log "sam build: $functions arm64 bootstraps"
}

# sam mode: the broker listens on the bridge address, which this machine's
# tools and the containers both reach (a broker on loopback advertises
# 127.0.0.1, which inside a container is the container itself).
use_docker_bridge() {
  DOCKER_BRIDGE_IP="$(docker_bridge_ip)" || return 1
  BROKER_HOST="$DOCKER_BRIDGE_IP"
  export PAYSTREAM_BROKER_HOST="$BROKER_HOST"
  export KAFKA_BOOTSTRAP_SERVERS="$BROKER_HOST:$BROKER_PORT"
}

# The configuration of the functions in SAM's containers (`--env-vars`): this
# machine's services at the bridge address, local secrets. SAM overrides only
# variables the template declares, so every one of these is declared there.
write_sam_env_file() { # file
  local db="${DATABASE_URL##*/}"
  cat >"$1" <<JSON
{"Parameters": {
  "PAYSTREAM_ENV": "local",
  "LOG_LEVEL": "${LOG_LEVEL:-info}",
  "DATABASE_URL": "postgres://postgres@$DOCKER_BRIDGE_IP:5432/$db",
  "DATABASE_SECRET_ARN": "",
  "DATABASE_TLS": "disable",
  "REDIS_URL": "redis://$DOCKER_BRIDGE_IP:6379/0",
  "REDIS_KEY_PREFIX": "${REDIS_KEY_PREFIX:-ps:}",
  "KAFKA_BOOTSTRAP_SERVERS": "$KAFKA_BOOTSTRAP_SERVERS",
  "KAFKA_CLUSTER_ARN": "",
  "KAFKA_AUTH": "none",
  "PUBLIC_BASE_URL": "$PUBLIC_BASE_URL",
  "JWT_SECRET_ARN": "",
  "PAN_FINGERPRINT_KEY_ARN": ""
}}
JSON
}

# PostgreSQL and Redis listen on loopback only; a forwarder on the bridge
# address (and nowhere else) lets the containers reach them. One that is
# already listening (another sam-mode run's, or one a killed run left) does
# the same job and is used as it is; the run that started it stops it.
# Ours stop last (stop_runtime): the functions need them to the end.
FORWARDER_PIDS=()
# SAM's containers that existed before this run's start-lambda (plus a
# marker, so the list is never empty once start-lambda ran).
SAM_CONTAINERS_BEFORE=()
start_forwarders() {
  local port
  mkdir -p "$LOG_DIR"
  for port in 5432 6379; do
    if wait_for_port "$DOCKER_BRIDGE_IP" "$port" 0; then
      log "a forwarder already listens on $DOCKER_BRIDGE_IP:$port; using it"
      continue
    fi
    socat "TCP-LISTEN:$port,bind=$DOCKER_BRIDGE_IP,reuseaddr,fork" "TCP:127.0.0.1:$port" >"$LOG_DIR/forward-$port.log" 2>&1 </dev/null &
    FORWARDER_PIDS+=($!)
    wait_for_listener_at "$!" "$DOCKER_BRIDGE_IP" "$port" 10 || { log "the forwarder for port $port did not start; see $LOG_DIR/forward-$port.log"; return 1; }
  done
}

# What every `sam local` run here needs once the stack is up: the base
# image, the functions' configuration, the forwarders, SAM's arguments.
prepare_sam_local() {
  ensure_lambda_base_image
  write_sam_env_file "$STATE_DIR/sam-env.json"
  start_forwarders
  sam_local_args
}

# The arguments every `sam local` command here takes; also exported, one
# per line, for scripts/invoke_samples.py --via sam.
sam_local_args() {
  SAM_LOCAL_ARGS=(--template "$SAM_BUILD_DIR/template.yaml" --env-vars "$STATE_DIR/sam-env.json")
  # Our own image exists only here: SAM must not look for it in a registry.
  [[ -z "$PAYSTREAM_SAM_INVOKE_IMAGE" ]] || SAM_LOCAL_ARGS+=(--invoke-image "$PAYSTREAM_SAM_INVOKE_IMAGE" --skip-pull-image)
  PAYSTREAM_SAM_LOCAL_ARGS="$(printf '%s\n' "${SAM_LOCAL_ARGS[@]}")"
  export PAYSTREAM_SAM_LOCAL_ARGS
}
