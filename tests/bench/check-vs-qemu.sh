#!/bin/sh
# img check against qemu-img check on a 1 TiB qcow2 image with metadata preallocation (64 KiB
# clusters: 16 Mi data clusters referenced, 128 MiB of L2 tables): wall time and peak RSS
# (/usr/bin/time -v), the two tools alternating, REPEAT runs each; prints the medians and the
# img/qemu-img ratios. Usage: tests/bench/check-vs-qemu.sh [BUILD_DIR]   (on demand, not a test)
set -eu
BUILD=${1:-build}
IMG=$BUILD/tools/img/img
REPEAT=${REPEAT:-5}
DIR=${BENCH_DIR:-$(mktemp -d)}
F=$DIR/check-bench.qcow2
[ -f "$F" ] || qemu-img create -q -f qcow2 -o preallocation=metadata "$F" 1T
measure() {  # tool -> "seconds kib"
  /usr/bin/time -v "$@" check "$F" >/dev/null 2>"$DIR/time.txt" || true
  awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, t, ":"); s = t[n] + (n > 1 ? 60 * t[n-1] : 0)}
              /Maximum resident set size/ {k = $2} END {print s, k}' "$DIR/time.txt"
}
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
: >"$DIR/img.txt"; : >"$DIR/qemu.txt"
i=0
while [ $i -lt "$REPEAT" ]; do
  measure "$IMG" >>"$DIR/img.txt"
  measure qemu-img >>"$DIR/qemu.txt"
  i=$((i + 1))
done
it=$(cut -d' ' -f1 "$DIR/img.txt" | median); im=$(cut -d' ' -f2 "$DIR/img.txt" | median)
qt=$(cut -d' ' -f1 "$DIR/qemu.txt" | median); qm=$(cut -d' ' -f2 "$DIR/qemu.txt" | median)
echo "runs (s KiB):"; paste -d'|' "$DIR/img.txt" "$DIR/qemu.txt" | sed 's/^/  img | qemu-img: /'
awk -v it="$it" -v im="$im" -v qt="$qt" -v qm="$qm" 'BEGIN {
  printf "median time: img %.2f s, qemu-img %.2f s, ratio %.2f\n", it, qt, it / qt
  printf "median peak RSS: img %.1f MiB, qemu-img %.1f MiB, ratio %.2f\n", im / 1024, qm / 1024, im / qm }'
