#!/usr/bin/env bash
# End-to-end: the demo with every expectation asserted, through the real
# function binaries (under the local Lambda host), the gateway and the poller.
# Called by scripts/test.sh after the stack is up.
source "$(dirname "$0")/lib.sh"
trap 'stop_runtime' EXIT
export PAYSTREAM_SCHEDULE_EVERY_S=5
start_runtime
cd "$REPO_ROOT"
export LOG_DIR
if ! "$BIN_DIR/demo" --check ||
   ! PATH="$VENV/bin:$PATH" python3 scripts/invoke_samples.py ||
   ! python3 scripts/redelivery_check.py; then
  log "end-to-end demo failed; last lines of each log:"
  for f in "$LOG_DIR"/*.log; do echo "--- $f" >&2; tail -15 "$f" >&2; done
  exit 1
fi
