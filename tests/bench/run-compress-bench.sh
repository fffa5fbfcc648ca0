#!/usr/bin/env bash
# Compressed convert: img convert -c vs qemu-img convert -c, side by side on the same 1 GiB of
# compressible data, with zlib and with zstd.
#   tests/bench/run-compress-bench.sh [BUILD_DIR]     (default build/; needs img built there)
# Environment: BENCH_DIR (work folder, ~3 GiB free; default BUILD_DIR/bench-data),
#   SIZE_MB (source size, default 1024), REPEAT (runs per figure, default 3; median shown).
# The source is text-like with variation (numbered lines of words, every 64 KiB different), not
# zeros: about 3:1 with zlib. Both tools read it from the page cache (it is read once before the
# runs) and write a fresh image; the two alternate, and every output image is checked with
# qemu-img check and compared with the source once.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD_DIR="$(cd "${1:-$ROOT/build}" && pwd)"
IMG="$BUILD_DIR/tools/img/img"
DIR="${BENCH_DIR:-$BUILD_DIR/bench-data}"
SIZE_MB="${SIZE_MB:-1024}"
REPEAT="${REPEAT:-3}"
for tool in qemu-img "$IMG" awk; do
  command -v "$tool" >/dev/null || { echo "run-compress-bench: $tool not found" >&2; exit 1; }
done
mkdir -p "$DIR"
cd "$DIR"
SRC=compressible.raw
if [[ ! -f $SRC || $(stat -c %s $SRC) != $((SIZE_MB << 20)) ]]; then
  echo "preparing ${SIZE_MB} MiB $SRC ..." >&2
  # Numbered lines of pseudo-random words: repeating vocabulary, never the same line twice.
  # (awk dies of SIGPIPE when head has enough; process substitution keeps that out of pipefail)
  head -c "$((SIZE_MB << 20))" < <(awk -v mb="$SIZE_MB" 'BEGIN {
      srand(42); n = split("qcow2 cluster refcount table guest host offset sector zstd deflate " \
                          "image backing snapshot virtio block request queue", w, " ");
      limit = mb * 1048576; total = 0; i = 0;
      while (total < limit) {
        line = sprintf("%09d", i++);
        for (k = 0; k < 10; k++) line = line " " w[int(rand() * n) + 1];
        print line; total += length(line) + 1;
      } }') > $SRC
fi
cat $SRC > /dev/null  # into the page cache, for both tools alike

secs() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'; }
mbs() { awk -v s="$1" -v mb="$SIZE_MB" 'BEGIN { printf "%.0f", mb / s }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rows=()
echo "runs (MB/s of source data; qemu-img and img alternating):" >&2
for type in zlib zstd; do
  q=() m=()
  for _ in $(seq "$REPEAT"); do
    rm -f q.qcow2 m.qcow2
    s=$(secs qemu-img convert -c -f raw -O qcow2 -o compression_type=$type $SRC q.qcow2)
    q+=("$(mbs "$s")")
    s=$(secs "$IMG" convert -c -f raw -O qcow2 -o compression_type=$type $SRC m.qcow2)
    m+=("$(mbs "$s")")
  done
  qemu-img check -q m.qcow2 || echo "WARNING: qemu-img check failed on img's $type image" >&2
  qemu-img compare -q $SRC m.qcow2 || echo "WARNING: img's $type image differs from the source" >&2
  echo "  $type: img ${m[*]} | qemu-img ${q[*]}  (sizes: img $(stat -c %s m.qcow2)," \
    "qemu-img $(stat -c %s q.qcow2) bytes)" >&2
  rows+=("$type|$(median "${m[@]}")|$(median "${q[@]}")")
  rm -f q.qcow2 m.qcow2
done
echo
echo "convert -c of ${SIZE_MB} MiB, $(nproc) cores, median of $REPEAT runs (MB/s of source data)"
printf '%-8s %10s %10s %7s\n' codec img qemu-img ratio
for r in "${rows[@]}"; do
  IFS='|' read -r name mine ref <<<"$r"
  printf '%-8s %10s %10s %7s\n' "$name" "$mine" "$ref" "$(awk -v a="$mine" -v b="$ref" 'BEGIN { printf "%.2f", a / b }')"
done
