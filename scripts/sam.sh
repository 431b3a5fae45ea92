#!/usr/bin/env bash
# `sam local` against this machine's services, in the sam mode's own stack
# (broker on the Docker bridge, database paystream_sam; see README "sam local").
#   scripts/sam.sh build                 sam build: the arm64 bootstraps (what deploys and what sam local runs)
#   scripts/sam.sh invoke ID EVENT [...]  sam local invoke of one function (logical id) with one event file;
#                                        further arguments go to sam; the engine stays up for the next one
#   scripts/sam.sh down                  stops the sam mode's broker and the dockerd these scripts started
# The whole platform on sam local start-lambda: PAYSTREAM_LAMBDA=sam bash scripts/run.sh
export PAYSTREAM_LAMBDA=sam
unset KAFKA_BOOTSTRAP_SERVERS PAYSTREAM_BROKER_HOST
source "$(dirname "$0")/lib.sh"
[[ "${1:-}" != invoke || -z "${3:-}" ]] || set -- "$1" "$2" "$(realpath "$3")" "${@:4}"
cd "$REPO_ROOT"
ensure_venv

case "${1:-}" in
  build) ensure_sam_build ;;
  invoke)
    (($# >= 3)) || { echo "usage: $0 invoke LOGICAL_ID EVENT_FILE [sam options]" >&2; exit 2; }
    shift
    [[ -f "$SAM_BUILD_DIR/template.yaml" ]] || ensure_sam_build
    ensure_docker
    use_docker_bridge
    "$REPO_ROOT/scripts/stack.sh" up
    trap 'stop_runtime' EXIT
    prepare_sam_local
    function_id=$1 event=$2; shift 2
    "$VENV/bin/sam" local invoke "$function_id" --event "$event" "${SAM_LOCAL_ARGS[@]}" "$@"
    ;;
  down)
    stop_broker
    DOCKERD_STARTED=1 stop_docker  # ours (its pid file), whichever run started it
    ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
