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

log "template checks"
"$VENV/bin/cfn-lint" template.yaml
"$VENV/bin/sam" validate --lint --template-file template.yaml
"$VENV/bin/sam" validate --region us-east-1 --template-file template.yaml

log "cargo test (workspace)"
cargo test --locked --workspace --all-targets

log "end to end: the demo and every sample event through cargo lambda watch, the gateway and the poller"
bash "$REPO_ROOT/scripts/e2e.sh"
