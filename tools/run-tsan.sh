#!/usr/bin/env bash
# The tests that run threads, under ThreadSanitizer (clang-19), in build-tsan/: libimg's thread
# pool, table cache, cluster and range locks, the concurrent crash and model tests, the I/O loop;
# the VMM's queue server, virtio devices, control socket and seccomp tests; the NBD server and
# client. On demand, not in CI: docs/fuzzing.md "ThreadSanitizer".
#   tools/run-tsan.sh [ctest arguments...]      e.g. tools/run-tsan.sh -R TableCache
# Any data race or lock-order inversion TSan reports fails the test that hit it (halt_on_error).
# Environment: TSAN_BUILD_DIR (default build-tsan), JOBS (default nproc), TSAN_TESTS (a ctest -R
# regex replacing the default set), IMG_APT (as tools/clang-setup.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# clang-setup.sh: clang-19 installed when missing, JOBS; not its ASan build.
CLANG_SETUP_CONFIGURE=0 . tools/clang-setup.sh
BUILD="${TSAN_BUILD_DIR:-$ROOT/build-tsan}"
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG" \
  -DCMAKE_C_COMPILER=clang-19 -DCMAKE_CXX_COMPILER=clang++-19 -DIMG_WERROR=OFF -DIMG_TSAN=ON \
  "${launcher[@]}" >/dev/null
ninja -C "$BUILD" -j "$JOBS" libimg_tests vmm_tests vmm nbd_tests img-nbd img
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"
default='ThreadPool|TableCache|ClusterLock|RangeLock|Qcow2Concurrent|IoLoop|Async|QueueServer'
default+='|Virtio|ControlServer|ControlE2e|Seccomp|NbdServer|NbdClient|HostileClient'
ctest --test-dir "$BUILD" -j "$JOBS" --output-on-failure --timeout 900 \
  -R "${TSAN_TESTS:-$default}" "$@"
