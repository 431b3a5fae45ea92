#!/usr/bin/env bash
# sam local, end to end, with the arm64 bootstraps that `sam build` made (the
# ones that deploy), in containers of the Docker engine these scripts start:
#   1. the platform on `sam local start-lambda` (PAYSTREAM_LAMBDA=sam): the
#      gateway and the poller invoke SAM's containers by logical id; the demo
#      with every expectation asserted (MSK-triggered processing included),
#      then the redelivery check (a failed invocation, the batch redelivered);
#   2. every sample under events/ through `sam local invoke -e`, each answer
#      checked as the `cargo lambda invoke` answers are (status, body schema).
# Its own database, Redis key prefix, state and broker (on the Docker bridge,
# port 9094), new every run, so a `PAYSTREAM_LAMBDA=sam` run.sh beside it is
# left alone. Called by scripts/test.sh after `sam build`.
export PAYSTREAM_LAMBDA=sam
export PAYSTREAM_STATE_DIR="${PAYSTREAM_CACHE:-$HOME/.cache/paystream}/state-sam-e2e"
export PAYSTREAM_BROKER_PORT=9094
export PAYSTREAM_DB="${PAYSTREAM_SAM_E2E_DB:-paystream_sam_e2e}"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$PAYSTREAM_DB"
export REDIS_KEY_PREFIX="sam-e2e:$(date +%s):"
# What test.sh exported is the host mode's broker.
unset KAFKA_BOOTSTRAP_SERVERS PAYSTREAM_BROKER_HOST
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
trap 'stop_runtime; stop_broker; stop_docker' EXIT
ensure_venv
ensure_postgres
ensure_redis
ensure_docker
use_docker_bridge
stop_broker
rm -f "$STATE_DIR/broker.db"*
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$PAYSTREAM_DB\" WITH (FORCE)" >/dev/null
"$REPO_ROOT/scripts/stack.sh" up
export PAYSTREAM_SCHEDULE_EVERY_S=5
start_runtime
export LOG_DIR
if ! "$BIN_DIR/demo" --check ||
   ! python3 scripts/redelivery_check.py ||
   ! wait_for_login ||
   ! PATH="$VENV/bin:$PATH" python3 scripts/invoke_samples.py --via sam; then
  log "sam local end to end failed; last lines of each log:"
  for f in "$LOG_DIR"/*.log; do echo "--- $f" >&2; tail -15 "$f" >&2; done
  exit 1
fi
