#!/usr/bin/env bash
# Records the goldens of the Dockerfile conformance corpus with real BuildKit: every case under
# tests/conformance/dockerfile/ is built with buildctl + buildkitd, and its golden.json written
# next to it. BuildKit is built outside this repository (see benches/README.md).
#
#   sudo tests/conformance/record.sh [BUILDKIT_BIN_DIR] [CASE_SUBSTRING]
#
# BUILDKIT_BIN_DIR holds buildkitd and buildctl (default /opt/buildkit-current/bin).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${1:-/opt/buildkit-current/bin}
[ -x "$BIN/buildkitd" ] && [ -x "$BIN/buildctl" ] || { echo "no buildkitd/buildctl in $BIN" >&2; exit 2; }
cd "$REPO"
KILN_CONFORMANCE_RECORD=$BIN KILN_CONFORMANCE_CASES=${2:-} \
    cargo test -p kiln --test conformance -- --nocapture
