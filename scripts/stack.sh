#!/usr/bin/env bash
# Brings the local stack up (safe to run again) or down.
#   scripts/stack.sh up     PostgreSQL, Redis, the broker (nisshi) with topics, database, migrations, seed
#   scripts/stack.sh down   stops the broker this script started (PostgreSQL and Redis are left running)
source "$(dirname "$0")/lib.sh"

case "${1:-up}" in
  up)
    ensure_rust_packages
    ensure_postgres
    ensure_redis
    ensure_broker
    ensure_database
    log "migrating and seeding $PAYSTREAM_DB"
    (cd "$REPO_ROOT" && ops seed)
    cat >&2 <<INFO
[paystream] stack is up:
  PostgreSQL  $DATABASE_URL   (local SMS outbox: table sms_outbox)
  Redis       $REDIS_URL
  Kafka       $KAFKA_BOOTSTRAP_SERVERS  ($BROKER_CRATE $BROKER_VERSION, SQLite $STATE_DIR/broker.db; topics: ${TOPICS[*]})
  admin       admin / \$PAYSTREAM_ADMIN_PASSWORD (local default admin-local-only)
  demo users  alice, bob, merchant_demo / demo-password
INFO
    ;;
  down) stop_broker ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
