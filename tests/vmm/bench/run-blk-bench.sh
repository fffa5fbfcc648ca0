#!/bin/sh
# Builds blk_bench (Release) and runs it: virtio-blk device model vs fio, raw and qcow2.
#   tests/vmm/bench/run-blk-bench.sh [--dir DIR] [--size-mib N] [--runtime S]
set -eu
root=$(cd "$(dirname "$0")/../../.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$build" blk_bench
exec "$build/tests/vmm/bench/blk_bench" "$@"
