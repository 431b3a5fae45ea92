#!/usr/bin/env bash
# The README's "run it" command: brings up the stack, every function under
# the local Lambda host, the gateway and the poller, runs the demo, then keeps
# everything running until Ctrl-C, which stops all of it cleanly.
# PAYSTREAM_LAMBDA=sam runs the functions in `sam local start-lambda`'s
# containers instead (README: "sam local").
source "$(dirname "$0")/lib.sh"
stop_all() {
  stop_broker_install
  stop_runtime
  [[ "$PAYSTREAM_LAMBDA" != sam ]] || stop_docker
}
trap 'stop_all; exit 0' INT TERM
trap 'stop_all' EXIT
if [[ "$PAYSTREAM_LAMBDA" == sam ]]; then
  ensure_venv
  ensure_docker
  use_docker_bridge
fi
ensure_rust_packages
start_broker_install
log "building the functions and local tools ($PAYSTREAM_PROFILE)"
(cd "$REPO_ROOT" && cargo build -q --locked --workspace --bins "${PROFILE_FLAGS[@]}")
wait_broker_install
"$REPO_ROOT/scripts/stack.sh" up
export PAYSTREAM_SCHEDULE_EVERY_S=10
start_runtime
cd "$REPO_ROOT"
"$BIN_DIR/demo" || log "the demo failed; logs are in $LOG_DIR"
log "the platform keeps running at http://127.0.0.1:$PAYSTREAM_HTTP_PORT — Ctrl-C stops everything"
# `wait` returns as soon as a trapped signal arrives (a foreground `sleep`
# would hold the trap back until it ended).
wait "${RUNTIME_PIDS[@]}"
