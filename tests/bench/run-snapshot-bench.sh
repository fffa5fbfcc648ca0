#!/usr/bin/env bash
# Internal snapshots: img snapshot -c / -d vs qemu-img snapshot -c / -d, side by side on the same
# image (issue 9's bar: each at least 10x faster than qemu-img on a 1 TiB image with metadata
# preallocation: 64 KiB clusters, 16 M mapped clusters, 128 MiB of L2 tables).
#   tests/bench/run-snapshot-bench.sh [BUILD_DIR]     (default build/; needs img built there)
# Environment: BENCH_DIR (work folder, ~200 MiB free; default BUILD_DIR/bench-data),
#   SIZE (virtual size, default 1T), REPEAT (runs per figure, default 3; median shown).
# Each run makes a fresh image, so both tools start from the same layout; the two alternate.
# After every operation `qemu-img check` must find nothing, and the snapshot one tool made is
# listed by the other (qemu-img lists img's, img deletes qemu-img's in a last cross run).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD_DIR="$(cd "${1:-$ROOT/build}" && pwd)"
IMG="$BUILD_DIR/tools/img/img"
DIR="${BENCH_DIR:-$BUILD_DIR/bench-data}"
SIZE="${SIZE:-1T}"
REPEAT="${REPEAT:-3}"
for tool in qemu-img "$IMG" awk; do
  command -v "$tool" >/dev/null || { echo "run-snapshot-bench: $tool not found" >&2; exit 1; }
done
mkdir -p "$DIR"
cd "$DIR"
F=snap-bench.qcow2

secs() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# (the metadata qemu-img create just wrote is in the page cache for both tools alike)
fresh() { rm -f $F; qemu-img create -q -f qcow2 -o preallocation=metadata $F "$SIZE"; }
check() {
  local out
  out=$(qemu-img check $F 2>&1) || { echo "qemu-img check failed after $1:" >&2; echo "$out" >&2; exit 1; }
}

declare -A T
for tool in qemu-img img; do T[$tool-c]=""; T[$tool-d]=""; done
for ((r = 0; r < REPEAT; r++)); do
  for tool in qemu-img img; do
    bin=qemu-img; [[ $tool == img ]] && bin="$IMG"
    fresh
    T[$tool-c]+="$(secs "$bin" snapshot -c s1 $F) "
    check "$tool snapshot -c"
    qemu-img snapshot -l $F | grep -q ' s1 ' || { echo "s1 not listed after $tool -c" >&2; exit 1; }
    T[$tool-d]+="$(secs "$bin" snapshot -d s1 $F) "
    check "$tool snapshot -d"
  done
done
# Cross: qemu-img's snapshot deleted by img, img's by qemu-img, checked.
fresh; qemu-img snapshot -c q $F; "$IMG" snapshot -d q $F; check "img -d of qemu-img's snapshot"
fresh; "$IMG" snapshot -c i $F; qemu-img snapshot -d i $F; check "qemu-img -d of img's snapshot"

printf "%-22s %10s %10s %8s\n" "image $SIZE prealloc" "qemu-img" "img" "ratio"
for op in c d; do
  q=$(tr ' ' '\n' <<<"${T[qemu-img-$op]}" | grep . | median)
  i=$(tr ' ' '\n' <<<"${T[img-$op]}" | grep . | median)
  printf "%-22s %9ss %9ss %7.1fx\n" "snapshot -$op" "$q" "$i" "$(awk -v a="$q" -v b="$i" 'BEGIN { print a / b }')"
done
echo "qemu-img check clean after every operation"
rm -f $F
