#!/usr/bin/env bash
# The README's "run it" command: brings up the stack, every function under
# the local Lambda host, the gateway and the poller, runs the demo, then keeps
# everything running until Ctrl-C, which stops all of it cleanly.
source "$(dirname "$0")/lib.sh"
ensure_venv
"$REPO_ROOT/scripts/stack.sh" up
trap 'stop_runtime; exit 0' INT TERM
trap 'stop_runtime' EXIT
export PAYSTREAM_SCHEDULE_EVERY_S=10
start_runtime
cd "$REPO_ROOT"
"$BIN_DIR/demo" || log "the demo failed; logs are in $LOG_DIR"
log "the platform keeps running at http://127.0.0.1:$PAYSTREAM_HTTP_PORT — Ctrl-C stops everything"
# `wait` returns as soon as a trapped signal arrives (a foreground `sleep`
# would hold the trap back until it ended).
wait "${RUNTIME_PIDS[@]}"
