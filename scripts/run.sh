#!/usr/bin/env bash
# The README's "run it" command: brings the stack up and runs the demo.
source "$(dirname "$0")/lib.sh"
"$REPO_ROOT/scripts/stack.sh" up
cd "$REPO_ROOT"
LOG_LEVEL=warn ops demo
