#!/usr/bin/env bash
# Set up and build (tools/setup.sh), then run the whole test suite; exits non-zero on failure.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. tools/setup.sh
cd "$BUILD_DIR"
ctest --output-on-failure -j2
