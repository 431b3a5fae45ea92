#!/usr/bin/env bash
# The README's "test it" command: every test against the real PostgreSQL,
# Redis and broker, plus the SAM template checks. CI runs exactly this.
# The Lambda host; the sam mode has its own step at the end.
export PAYSTREAM_LAMBDA=host
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
trap 'stop_broker_install' EXIT

ensure_venv
ensure_browser
ensure_rust_packages
ensure_postgres
ensure_redis
# The broker is needed from `stack.sh up` on; on a new machine it builds
# beside `sam build`.
start_broker_install

# Per-test databases of an interrupted earlier run.
psql -h 127.0.0.1 -U postgres -d postgres -tAc \
  "SELECT datname FROM pg_database WHERE datname LIKE 'paystream\_t\_%'" |
  while read -r db; do [[ -n "$db" ]] && psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null; done

log "openapi.json: a valid OpenAPI 3.1 document (the cargo tests check it matches the code)"
"$VENV/bin/openapi-spec-validator" openapi.json

log "template checks (template.yaml and its Managed Instances variant, which must be what the script derives)"
"$VENV/bin/python" scripts/managed_instances_template.py template.yaml | diff -u template.managed-instances.yaml - ||
  { log "template.managed-instances.yaml is stale: $VENV/bin/python scripts/managed_instances_template.py template.yaml > template.managed-instances.yaml"; exit 1; }
for template in template.yaml template.managed-instances.yaml; do
  "$VENV/bin/cfn-lint" "$template"
  "$VENV/bin/sam" validate --lint --template-file "$template"
  "$VENV/bin/sam" validate --region us-east-1 --template-file "$template"
done

ensure_sam_build
export PAYSTREAM_SAM_BUILT=1

wait_broker_install
"$REPO_ROOT/scripts/stack.sh" up

log "cargo test (workspace)"
# The crash-point tests run the real function binaries, which need the
# failpoints compiled in. `cargo test` builds a package's plain binary only
# when that package has integration tests, so build them all first, with the
# same features cargo test unifies (no second compile).
cargo build --locked --workspace --bins --features paystream-shared/testing,paystream-shared/failpoints
cargo test --locked --workspace --all-targets

log "end to end: the demo and every sample event through the local Lambda host, the gateway and the poller"
bash "$REPO_ROOT/scripts/e2e.sh"

log "chaos: its own stack, mixed load through the gateway, real kills and restarts, invariants from the database and the topics"
bash "$REPO_ROOT/scripts/chaos.sh"

log "sam local: the platform on sam local start-lambda, and every sample through sam local invoke, in Docker"
bash "$REPO_ROOT/scripts/sam_e2e.sh"
