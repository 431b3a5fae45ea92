#!/usr/bin/env bash
# End-to-end: the demo with every expectation asserted, through the real
# function binaries (under the local Lambda host), the gateway and the poller;
# then schemathesis against the same gateway (scripts/schemathesis.sh).
# Called by scripts/test.sh after the stack is up.
# Its own database and Redis key prefix, new every run: what the demo and
# the browser checks count must not depend on what earlier runs (or
# schemathesis's generated merchants) left in the local demo database.
export PAYSTREAM_DB="${PAYSTREAM_E2E_DB:-paystream_e2e}"
# Set here, not inherited: test.sh has already exported the demo database's URL.
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$PAYSTREAM_DB"
export REDIS_KEY_PREFIX="e2e:$(date +%s):"
export PAYSTREAM_LAMBDA=host
source "$(dirname "$0")/lib.sh"
trap 'stop_runtime' EXIT
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$PAYSTREAM_DB\" WITH (FORCE)" >/dev/null
ensure_database
log "migrating and seeding $PAYSTREAM_DB"
(cd "$REPO_ROOT" && ops seed)
ensure_browser
SCREENSHOT_DIR="${PAYSTREAM_SCREENSHOT_DIR:-$STATE_DIR/screenshots}"

# After the demo: the API explorer (every route, "try it out" on GET
# /card-products) and the merchant console (the demo merchant's numbers
# against the API, a refresh, a stranger sees nothing) in headless Chromium.
# Screenshots land in $SCREENSHOT_DIR.
browser_checks() {
  mkdir -p "$SCREENSHOT_DIR"
  log "browser: the API explorer at $PUBLIC_BASE_URL/docs"
  NODE_PATH="$PAYSTREAM_NODE_MODULES" node functions/account/tests/browser/docs.cjs "$PUBLIC_BASE_URL" "$SCREENSHOT_DIR" || return 1
  log "browser: the merchant console at $PUBLIC_BASE_URL/console"
  NODE_PATH="$PAYSTREAM_NODE_MODULES" node functions/account/tests/browser/console.cjs "$PUBLIC_BASE_URL" \
    merchant_demo demo-password "$SCREENSHOT_DIR" || return 1
  log "browser: screenshots in $SCREENSHOT_DIR"
}
export PAYSTREAM_SCHEDULE_EVERY_S=5
start_runtime
cd "$REPO_ROOT"
export LOG_DIR
if ! "$BIN_DIR/demo" --check ||
   ! PATH="$VENV/bin:$PATH" python3 scripts/invoke_samples.py ||
   ! python3 scripts/redelivery_check.py ||
   ! wait_for_login ||
   ! browser_checks ||
   ! bash scripts/schemathesis.sh; then
  log "end-to-end demo failed; last lines of each log:"
  for f in "$LOG_DIR"/*.log; do echo "--- $f" >&2; tail -15 "$f" >&2; done
  exit 1
fi
