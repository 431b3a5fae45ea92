#!/usr/bin/env bash
# The README's "test it" command: every test against the real PostgreSQL,
# Redis and broker, plus the SAM template checks. CI runs exactly this.
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

ensure_venv
ensure_browser
"$REPO_ROOT/scripts/stack.sh" up

# Per-test databases of an interrupted earlier run.
psql -h 127.0.0.1 -U postgres -d postgres -tAc \
  "SELECT datname FROM pg_database WHERE datname LIKE 'paystream\_t\_%'" |
  while read -r db; do [[ -n "$db" ]] && psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null; done

log "openapi.json: a valid OpenAPI 3.1 document (the cargo tests check it matches the code)"
"$VENV/bin/openapi-spec-validator" openapi.json

log "template checks"
"$VENV/bin/cfn-lint" template.yaml
"$VENV/bin/sam" validate --lint --template-file template.yaml
"$VENV/bin/sam" validate --region us-east-1 --template-file template.yaml

log "sam build: an arm64 bootstrap for every function (cargo-lambda + zig, offline)"
ensure_arm64_target
SAM_BUILD_DIR="$PAYSTREAM_CACHE/sam-build"
PATH="$VENV/bin:$PATH" "$VENV/bin/sam" build --template-file template.yaml --build-dir "$SAM_BUILD_DIR"
functions=0
for bootstrap in "$SAM_BUILD_DIR"/*/bootstrap; do
  # ELF e_machine (bytes 18-19) is 0xb7 0x00 for aarch64.
  [[ "$(od -An -tx1 -j18 -N2 "$bootstrap" | tr -d ' ')" == "b700" ]] || { log "$bootstrap is not an arm64 executable"; exit 1; }
  functions=$((functions + 1))
done
expected=$(grep -c 'Type: AWS::Serverless::Function' template.yaml)
[[ "$functions" -eq "$expected" ]] || { log "sam build produced $functions bootstraps, the template has $expected functions"; exit 1; }
log "sam build: $functions arm64 bootstraps"

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
