#!/usr/bin/env bash
# What extended L2 (subclusters) are for: 4 KiB writes scattered over a fresh overlay of a fully
# written 4 GiB backing image. Without subclusters every first write into a cluster copies the
# whole cluster from the backing image (64 KiB read and written for 4 KiB of guest data); with
# them only the subclusters the write touches (128 KiB clusters: 4 KiB subclusters, no copy).
#   tests/bench/run-subcluster-bench.sh [BUILD_DIR]   (default build/; needs img_bench built)
# Environment: BENCH_DIR (work folder, ~5 GiB free; default BUILD_DIR/bench-data),
#   COUNT (writes per run, default 10000), DEPTH (in flight, default 32), REPEAT (default 3;
#   the median is reported).
# Both tools run the same pattern: qemu-img bench -w -t none -s 4k -S STEP, and img_bench write
# with the same STEP (O_DIRECT): offsets advance by STEP (an odd number of 4 KiB blocks, ~390
# MiB) and wrap at the image end, so the writes scatter over the whole image. Each run gets a
# new overlay, made by qemu-img create; libimg's are checked with qemu-img check after the run.
# The four figures alternate within each repetition, so a noisy neighbour (a shared host) weighs
# on all of them alike.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD_DIR="$(cd "${1:-$ROOT/build}" && pwd)"
BENCH="$BUILD_DIR/tests/bench/img_bench"
DIR="${BENCH_DIR:-$BUILD_DIR/bench-data}"
COUNT="${COUNT:-10000}"
DEPTH="${DEPTH:-32}"
REPEAT="${REPEAT:-3}"
STEP=$((4096 * 100003))
export IMG_BENCH_CACHE=none
for tool in qemu-img "$BENCH"; do
  command -v "$tool" >/dev/null || { echo "run-subcluster-bench: $tool not found" >&2; exit 1; }
done
mkdir -p "$DIR"
cd "$DIR"
if [[ ! -f sc-base.qcow2 ]]; then
  echo "preparing a fully written 4 GiB sc-base.qcow2 ..."
  head -c 4G < <(yes "libimg subcluster benchmark 0123456789abcdef") > sc-base.raw
  qemu-img convert -f raw -O qcow2 sc-base.raw sc-base.qcow2
  rm -f sc-base.raw
fi
drop_caches() {
  sync
  if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 > /proc/sys/vm/drop_caches; fi
}
overlay() {  # overlay OPTS
  rm -f sc-top.qcow2
  qemu-img create -q -f qcow2 -o "$1" -b sc-base.qcow2 -F qcow2 sc-top.qcow2
  drop_caches
}
opts_of() {
  if [[ $1 == ext ]]; then echo "cluster_size=131072,extended_l2=on"; else echo "cluster_size=65536"; fi
}
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
run_qemu() {
  qemu-img bench -w -t none -f qcow2 -c "$COUNT" -d "$DEPTH" -s 4096 -S "$STEP" sc-top.qcow2 |
    sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p'
}
run_img() {
  local out; out=$("$BENCH" write sc-top.qcow2 "$COUNT" "$DEPTH" 4096 "$STEP")
  [[ "$out" == *o_direct=1* ]] || { echo "img_bench did not use O_DIRECT: $out" >&2; exit 1; }
  sed -n 's/^seconds=\([0-9.]*\).*/\1/p' <<<"$out"
}
declare -A runs secs
for ((r = 0; r < REPEAT; r++)); do
  for cfg in plain ext; do
    for tool in qemu img; do
      overlay "$(opts_of $cfg)"
      s=$(run_$tool)
      [[ $tool == img ]] && qemu-img check -q sc-top.qcow2
      runs[$cfg.$tool]+="$s "
      echo "run $r: $cfg ($(opts_of $cfg)) $tool: $s s"
    done
  done
done
for k in "${!runs[@]}"; do
  # shellcheck disable=SC2086
  secs[$k]=$(median ${runs[$k]})
done
rm -f sc-top.qcow2
iops() { awk -v c="$COUNT" -v s="$1" 'BEGIN { printf "%.0f", c / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "4 KiB writes into a fresh overlay over 4 GiB: $COUNT writes, depth $DEPTH (IOPS, median of $REPEAT)"
printf '%-8s %14s %22s %10s\n' tool "64k clusters" "128k + extended_l2" speedup
for tool in qemu img; do
  name=qemu-img; [[ $tool == img ]] && name=libimg
  printf '%-8s %14s %22s %9sx\n' "$name" "$(iops "${secs[plain.$tool]}")" \
    "$(iops "${secs[ext.$tool]}")" "$(ratio "${secs[plain.$tool]}" "${secs[ext.$tool]}")"
done
