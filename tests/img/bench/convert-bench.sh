#!/usr/bin/env bash
# img convert vs qemu-img 7.2 convert, side by side in one run on the same files, with the same
# cache semantics (both write the target with their default -t unsafe: no flush to disk at the
# end; both read the source through the page cache, -T writeback). Prints seconds per run
# (the two tools alternate), medians and the ratio qemu-img / img (above 1: img is faster).
#   tests/img/bench/convert-bench.sh [BUILD_DIR]     (default build/; needs img built there)
# Environment:
#   BENCH_DIR   work folder (default BUILD_DIR/convert-bench); needs about 3 x RANDOM_MB free
#   RANDOM_MB   size of the random-data source (default 2048; 512 where disk or time is tight)
#   SPARSE_GB   size of the sparse source, 10% data in 1 MiB pieces (default 16)
#   REPEAT      runs per figure (default 3; the median is shown)
# Cases: raw -> qcow2 of random data; raw -> raw of the sparse file (90% holes); empty qcow2 of
# 1 PiB and of 16 TiB -> qcow2. The last line of each case checks img's output with qemu-img
# compare against the source.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
BUILD_DIR="$(cd "${1:-$ROOT/build}" && pwd)"
IMG="$BUILD_DIR/tools/img/img"
DIR="${BENCH_DIR:-$BUILD_DIR/convert-bench}"
RANDOM_MB="${RANDOM_MB:-2048}"
SPARSE_GB="${SPARSE_GB:-16}"
REPEAT="${REPEAT:-3}"
for tool in qemu-img "$IMG" awk; do
  command -v "$tool" >/dev/null || { echo "convert-bench: $tool not found" >&2; exit 1; }
done
mkdir -p "$DIR"
cd "$DIR"

if [[ ! -f random.raw || $(stat -c %s random.raw) != $((RANDOM_MB << 20)) ]]; then
  echo "preparing ${RANDOM_MB} MiB random.raw ..." >&2
  head -c "$((RANDOM_MB << 20))" /dev/urandom > random.raw
fi
if [[ ! -f sparse.raw || $(stat -c %s sparse.raw) != $((SPARSE_GB << 30)) ]]; then
  echo "preparing ${SPARSE_GB} GiB sparse.raw (1 MiB of data every 10 MiB) ..." >&2
  rm -f sparse.raw
  truncate -s "${SPARSE_GB}G" sparse.raw
  for ((mb = 0; mb < SPARSE_GB * 1024; mb += 10)); do
    head -c 1M /dev/urandom | dd of=sparse.raw bs=1M seek=$mb conv=notrunc status=none
  done
fi
[[ -f empty-1p.qcow2 ]] || qemu-img create -q -f qcow2 empty-1p.qcow2 1P
[[ -f empty-16t.qcow2 ]] || qemu-img create -q -f qcow2 empty-16t.qcow2 16T
cat random.raw sparse.raw > /dev/null  # into the page cache, for both tools alike

secs() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rows=()
# case NAME SRC SRC_FMT OUT_FMT
run_case() {
  local name=$1 src=$2 sfmt=$3 ofmt=$4 q=() m=() s
  for _ in $(seq "$REPEAT"); do
    rm -f q.out m.out
    s=$(secs qemu-img convert -f "$sfmt" -O "$ofmt" "$src" q.out); q+=("$s")
    rm -f q.out
    s=$(secs "$IMG" convert -f "$sfmt" -O "$ofmt" "$src" m.out); m+=("$s")
  done
  qemu-img compare -q -f "$sfmt" -F "$ofmt" "$src" m.out || echo "WARNING: $name: img's output differs" >&2
  echo "  $name: img ${m[*]} | qemu-img ${q[*]} (s)" >&2
  rows+=("$name|$(median "${m[@]}")|$(median "${q[@]}")")
  rm -f q.out m.out
}
echo "runs (seconds; qemu-img and img alternating):" >&2
run_case "raw->qcow2 ${RANDOM_MB} MiB random" random.raw raw qcow2
run_case "raw->raw ${SPARSE_GB} GiB 90% holes" sparse.raw raw raw
run_case "raw->qcow2 ${SPARSE_GB} GiB 90% holes" sparse.raw raw qcow2
run_case "qcow2->qcow2 empty 1 PiB" empty-1p.qcow2 qcow2 qcow2
run_case "qcow2->qcow2 empty 16 TiB" empty-16t.qcow2 qcow2 qcow2
echo
echo "convert, median of $REPEAT runs, $(nproc) cores (seconds; ratio = qemu-img / img)"
printf '%-36s %9s %9s %7s\n' case img qemu-img ratio
for r in "${rows[@]}"; do
  IFS='|' read -r name mi qi <<< "$r"
  printf '%-36s %9.3f %9.3f %7.2f\n' "$name" "$mi" "$qi" "$(awk -v a="$qi" -v b="$mi" 'BEGIN { print a / b }')"
done
