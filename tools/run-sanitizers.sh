#!/usr/bin/env bash
# The whole unit test suite under AddressSanitizer + UndefinedBehaviorSanitizer (clang-19), in
# build-fuzz/ (tools/clang-setup.sh: the same build the fuzzers use). Any ASan or UBSan finding
# aborts the test that hit it, so it fails. The opt-in Linux guest tests are left out as in the
# README's command; SAN_EXCLUDE (a ctest -E regex, default "linux") changes that.
#   tools/run-sanitizers.sh [ctest arguments...]
# Environment: JOBS (build and ctest jobs, default nproc), IMG_APT, FUZZ_BUILD_DIR.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. tools/clang-setup.sh
ninja -C "$FUZZ_BUILD_DIR" -j "$JOBS"
# Every test under ASan runs 2-3x slower: ctest's timeout grows with it.
ctest --test-dir "$FUZZ_BUILD_DIR" -j "$JOBS" --output-on-failure --timeout 1500 \
  -E "${SAN_EXCLUDE:-linux}" "$@"
