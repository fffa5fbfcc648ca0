#!/bin/sh
# img-nbd against qemu-nbd serving the same fully written qcow2 (-e 8), side by side in one run,
# on a unix socket and on TCP loopback, with each cache mode in CACHES (default: writeback, the
# default of both, then none, O_DIRECT, where the disk sets the pace): nbdcopy of the whole
# image to null (sequential reads over four connections), fio's nbd engine with 4 KiB random
# reads and writes at queue depth 32, and `qemu-img convert` from the export into qemu's null-co
# driver (the copy's cost alone, no target file).
#
# Both servers run at once and the measurements alternate (img, qemu, img, qemu...) for REPEAT
# rounds, so a slow minute on a shared machine hits both; each figure is the median of its
# rounds, and the ratio is ours over theirs (above 1: img-nbd is faster).
# On demand, not in the suite:
#   tests/nbd/bench/run-nbd-bench.sh [build-dir] [size]     (default build, 1G)
#   RUNTIME=seconds per fio run (default 10), REPEAT=rounds (default 3), PORT=first TCP port,
#   CACHES="writeback none" (img-nbd/qemu-nbd --cache values, one table each)
set -eu
BUILD=${1:-build}
SIZE=${2:-1G}
IMG_NBD=$(cd "$BUILD" && pwd)/tools/img-nbd/img-nbd
RUNTIME=${RUNTIME:-10}
REPEAT=${REPEAT:-3}
PORT=${PORT:-10909}
CACHES=${CACHES:-writeback none}
T=$(mktemp -d)
# (qemu-nbd leaves its pid file behind: a kill that finds no process is no failure)
trap 'for p in "$T"/*.pid; do [ -f "$p" ] && { kill "$(cat "$p")" 2>/dev/null || true; }; done; rm -rf "$T"' EXIT

qemu-img create -q -f qcow2 "$T/disk.qcow2" "$SIZE"
qemu-io -f qcow2 -c "write -P 0x5a 0 $SIZE" "$T/disk.qcow2" >/dev/null
BYTES=$(qemu-img info --output=json "$T/disk.qcow2" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')

# serve NAME BINARY CACHE LISTEN-ARGS...: each server has its own copy of the image (written out
# and read once, so that the first reader does not pay for a cold host cache).
serve() {
  name=$1 bin=$2 cache=$3
  shift 3
  cp "$T/disk.qcow2" "$T/$name.qcow2"
  sync "$T/$name.qcow2"
  cat "$T/$name.qcow2" >/dev/null
  "$bin" --fork --pid-file "$T/$name.pid" -t -e 8 --cache="$cache" -f qcow2 "$@" "$T/$name.qcow2"
}
stop() {
  p=$(cat "$T/$1.pid")
  kill "$p"
  while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
}
uri() {
  case $1 in
    img | qemu) echo "nbd+unix:///?socket=$T/$1.sock" ;;
    imgtcp) echo "nbd://127.0.0.1:$PORT/" ;;
    qemutcp) echo "nbd://127.0.0.1:$((PORT + 1))/" ;;
  esac
}

now() { date +%s.%N; }
mibs() { echo "$1 $2" | awk -v size="$BYTES" '{ printf "%.0f", size / 1048576 / ($2 - $1) }'; }
seq_read() {  # MiB/s of nbdcopy to null
  s=$(now)
  nbdcopy "$(uri "$1")" null:
  mibs "$s" "$(now)"
}
convert() {  # MiB/s of qemu-img convert into null-co
  s=$(now)
  qemu-img convert -n -f raw "$(uri "$1")" --target-image-opts "driver=null-co,size=$BYTES"
  mibs "$s" "$(now)"
}
fio_iops() {  # fio_iops NAME randread|randwrite
  fio --name=b --ioengine=nbd --uri="$(uri "$1")" --rw="$2" --bs=4k --iodepth=32 \
    --time_based --runtime="$RUNTIME" --size="$SIZE" --output-format=terse --terse-version=3 |
    awk -F';' -v rw="$2" '/^3;/ { print (rw == "randread") ? $8 : $49 }'
}
measure() {  # measure PATTERN NAME: runs it and appends the figure to $T/PATTERN.NAME
  case $1 in
    seq) v=$(seq_read "$2") ;;
    convert) v=$(convert "$2") ;;
    randread | randwrite) v=$(fio_iops "$2" "$1") ;;
  esac
  echo "$v" >>"$T/$1.$2"
}
median() { sort -n "$1" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

row() {  # row LABEL PATTERN OURS THEIRS
  a=$(median "$T/$2.$3")
  b=$(median "$T/$2.$4")
  printf '%-36s %10s %10s %7s\n' "$1" "$a" "$b" "$(echo "$a $b" | awk '{ printf "%.2f", $1 / $2 }')"
}
PATTERNS="seq convert randread randwrite"
for cache in $CACHES; do
  serve img "$IMG_NBD" "$cache" -k "$T/img.sock"
  serve qemu qemu-nbd "$cache" -k "$T/qemu.sock"
  serve imgtcp "$IMG_NBD" "$cache" -b 127.0.0.1 -p "$PORT"
  serve qemutcp qemu-nbd "$cache" -b 127.0.0.1 -p $((PORT + 1))
  rm -f "$T"/seq.* "$T"/convert.* "$T"/randread.* "$T"/randwrite.*
  for r in $(seq "$REPEAT"); do
    for p in $PATTERNS; do
      for s in img qemu imgtcp qemutcp; do measure "$p" "$s"; done
    done
  done
  for s in img qemu imgtcp qemutcp; do stop $s; done
  printf '\nimage %s, --cache=%s, %s rounds, fio %s s each; medians\n' "$SIZE" "$cache" "$REPEAT" "$RUNTIME"
  printf '%-36s %10s %10s %7s\n' pattern img-nbd qemu-nbd ratio
  for tr in unix tcp; do
    if [ $tr = unix ]; then o=img t=qemu; else o=imgtcp t=qemutcp; fi
    row "$tr: nbdcopy to null (MiB/s)" seq $o $t
    row "$tr: qemu-img convert (MiB/s)" convert $o $t
    row "$tr: fio 4k randread qd32 (IOPS)" randread $o $t
    row "$tr: fio 4k randwrite qd32 (IOPS)" randwrite $o $t
  done
done
