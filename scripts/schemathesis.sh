#!/usr/bin/env bash
# schemathesis (pinned in PY_TOOLS) against the running local runtime and the
# committed openapi.json: every phase (examples, coverage, fuzzing, stateful)
# and every check, with a USER's, a MERCHANT's and the ADMIN's token (the
# seeded accounts). Fails on any server error, any schema-valid request
# rejected other than a documented business rule (hooks.py), any undocumented
# status, header or body. Bounded: PAYSTREAM_SCHEMATHESIS_MAX_TIME_S (default
# 240) for the whole run, PAYSTREAM_SCHEMATHESIS_MAX_EXAMPLES (default 25) per
# operation and phase. Called by scripts/e2e.sh once the demo has run.
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
export PAYSTREAM_BASE_URL="http://127.0.0.1:$PAYSTREAM_HTTP_PORT"
MAX_TIME_S="${PAYSTREAM_SCHEMATHESIS_MAX_TIME_S:-240}"
MAX_EXAMPLES="${PAYSTREAM_SCHEMATHESIS_MAX_EXAMPLES:-25}"

token() { # username password
  local body
  body="$(python3 -c 'import json,sys; print(json.dumps({"username": sys.argv[1], "password": sys.argv[2]}))' "$1" "$2")"
  curl -fsS --max-time 10 -H 'content-type: application/json' -d "$body" "$PAYSTREAM_BASE_URL/auth/login" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
PAYSTREAM_USER_TOKEN="$(token alice demo-password)"
PAYSTREAM_MERCHANT_TOKEN="$(token merchant_demo demo-password)"
PAYSTREAM_ADMIN_TOKEN="$(token admin "$PAYSTREAM_ADMIN_PASSWORD")"
export PAYSTREAM_USER_TOKEN PAYSTREAM_MERCHANT_TOKEN PAYSTREAM_ADMIN_TOKEN

report_dir="$STATE_DIR/schemathesis"
rm -rf "$report_dir" && mkdir -p "$report_dir"
log "schemathesis: every phase and check against $PAYSTREAM_BASE_URL (at most ${MAX_TIME_S} s, ${MAX_EXAMPLES} examples per operation)"
"$VENV/bin/schemathesis" --config-file scripts/schemathesis/schemathesis.toml --no-color run openapi.json \
  --url "$PAYSTREAM_BASE_URL" \
  --phases examples,coverage,fuzzing,stateful \
  --checks all --exclude-checks positive_data_acceptance,negative_data_rejection \
  --max-examples "$MAX_EXAMPLES" \
  --max-time "$MAX_TIME_S" \
  --workers 2 \
  --report junit --report-dir "$report_dir"
