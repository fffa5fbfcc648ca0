#!/usr/bin/env bash
# libimg vs qemu-img bench (and fio for the random-read limit), side by side on the same files.
#   tests/bench/run-img-bench.sh [BUILD_DIR]     (default build/; needs img_bench built there)
# Environment: BENCH_DIR (work folder, ~9 GiB free; default BUILD_DIR/bench-data),
#   COUNT (4 KiB requests per read run, default 200000), IMG_BENCH_CACHE=none|writeback
#   (none = O_DIRECT for both tools, the default), FIO_RUNTIME (seconds, default 10),
#   REPEAT (runs of each figure, default 3; the table shows the median, every run is printed).
# Each pattern runs the reference and libimg alternately, REPEAT times, and drops the page cache
# (sync; echo 3 > /proc/sys/vm/drop_caches, when writable: run as root) before every run, so
# neither side starts with the other's cached data or metadata. img_bench itself checks in
# /proc/self/fdinfo that the image is open with O_DIRECT and exits 1 if not.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD_DIR="$(cd "${1:-$ROOT/build}" && pwd)"
BENCH="$BUILD_DIR/tests/bench/img_bench"
IMG="$BUILD_DIR/tools/img/img"
DIR="${BENCH_DIR:-$BUILD_DIR/bench-data}"
COUNT="${COUNT:-200000}"
CACHE="${IMG_BENCH_CACHE:-none}"
FIO_RUNTIME="${FIO_RUNTIME:-10}"
REPEAT="${REPEAT:-3}"
export IMG_BENCH_CACHE="$CACHE"
for tool in qemu-img fio "$BENCH" "$IMG"; do
  command -v "$tool" >/dev/null || { echo "run-img-bench: $tool not found" >&2; exit 1; }
done
mkdir -p "$DIR"
cd "$DIR"

# 4 GiB of non-zero data: a raw file (for fio) and a fully written qcow2 image of it.
if [[ ! -f read.qcow2 || ! -f data.raw || $(stat -c %s data.raw) != $((4 << 30)) ]]; then
  echo "preparing 4 GiB data.raw and read.qcow2 ..."
  # (yes dies of SIGPIPE when head has enough; process substitution keeps that out of pipefail)
  head -c 4G < <(yes "libimg benchmark data 0123456789abcdef") > data.raw
  qemu-img convert -f raw -O qcow2 data.raw read.qcow2
fi

qemu_secs() { sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p'; }
img_secs() {
  local out; out=$(cat)
  if [[ "$CACHE" == none && "$out" != *o_direct=1* ]]; then
    echo "run-img-bench: img_bench did not run with O_DIRECT: $out" >&2; exit 1
  fi
  sed -n 's/^seconds=\([0-9.]*\).*/\1/p' <<<"$out"
}
drop_caches() {
  sync
  if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 > /proc/sys/vm/drop_caches; fi
}
rows=()
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", a / b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
row() { rows+=("$1|$2|$3|$4"); }  # pattern, libimg IOPS, reference IOPS, reference name
# pattern name, reference name, then the per-run figures: "libimg..." "--" "reference..."
report() {
  local name=$1 who=$2; shift 2
  local mine=() ref=() side=mine
  for v in "$@"; do
    if [[ "$v" == -- ]]; then side=ref; continue; fi
    if [[ $side == mine ]]; then mine+=("$v"); else ref+=("$v"); fi
  done
  echo "  $name: libimg ${mine[*]} | $who ${ref[*]}" >&2
  row "$name" "$(median "${mine[@]}")" "$(median "${ref[@]}")" "$who"
}
[[ -w /proc/sys/vm/drop_caches ]] || echo "run-img-bench: not root: page cache not dropped" >&2

echo "runs (each figure $REPEAT times, reference and libimg alternating):" >&2
for depth in 1 32; do
  m=() q=()
  for _ in $(seq "$REPEAT"); do
    drop_caches
    s=$(qemu-img bench -f qcow2 -t "$CACHE" -i io_uring -c "$COUNT" -d "$depth" -s 4k -S 64k \
          read.qcow2 | qemu_secs)
    q+=("$(div "$COUNT" "$s")")
    drop_caches
    s=$("$BENCH" read read.qcow2 "$COUNT" "$depth" 4k 64k | img_secs)
    m+=("$(div "$COUNT" "$s")")
  done
  report "qcow2 4k read, 64k step, QD$depth" qemu-img "${m[@]}" -- "${q[@]}"
done

WCOUNT=4096  # 4 GiB of 1 MiB writes into a new 4 GiB image
m=() q=()
for _ in $(seq "$REPEAT"); do
  rm -f w-qemu.qcow2 w-img.qcow2
  qemu-img create -q -f qcow2 w-qemu.qcow2 4G
  "$IMG" create -q -f qcow2 w-img.qcow2 4G
  drop_caches
  s=$(qemu-img bench -w -f qcow2 -t "$CACHE" -i io_uring -c "$WCOUNT" -d 8 -s 1M w-qemu.qcow2 |
        qemu_secs)
  q+=("$(div "$WCOUNT" "$s")")
  drop_caches
  s=$("$BENCH" write w-img.qcow2 "$WCOUNT" 8 1M 1M | img_secs)
  m+=("$(div "$WCOUNT" "$s")")
  qemu-img check -q w-img.qcow2 || echo "WARNING: qemu-img check failed on libimg's image" >&2
done
rm -f w-qemu.qcow2 w-img.qcow2
report "qcow2 1M write (new image), QD8 [MiB/s]" qemu-img "${m[@]}" -- "${q[@]}"

direct=1; [[ "$CACHE" == none ]] || direct=0
m=() f=()
for _ in $(seq "$REPEAT"); do
  drop_caches
  f+=("$(fio --name=randread --filename=data.raw --ioengine=io_uring --direct=$direct \
           --rw=randread --bs=4k --iodepth=32 --runtime="$FIO_RUNTIME" --time_based --minimal |
         cut -d';' -f8)")
  drop_caches
  s=$("$BENCH" randread read.qcow2 "$COUNT" 32 4k | img_secs)
  m+=("$(div "$COUNT" "$s")")
done
report "4k random read, QD32 (fio: raw file)" fio "${m[@]}" -- "${f[@]}"

echo
echo "cache=$CACHE, $COUNT read requests per run, median of $REPEAT runs; figures are IOPS" \
  "(1M writes: MiB/s)"
printf '%-42s %12s %12s %-9s %7s\n' pattern libimg reference "(ref)" ratio
for r in "${rows[@]}"; do
  IFS='|' read -r name mine ref who <<<"$r"
  printf '%-42s %12s %12s %-9s %7s\n' "$name" "$mine" "$ref" "($who)" \
    "$(ratio "$mine" "$ref")"
done
