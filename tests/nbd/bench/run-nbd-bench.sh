#!/bin/sh
# img-nbd against qemu-nbd serving the same qcow2 on a unix socket, side by side in one run:
# nbdcopy of the whole image to /dev/null (sequential reads), and fio's nbd engine with 4 KiB
# random reads and writes at queue depth 32. Prints each figure and the ratio ours/theirs.
# On demand, not in the suite:
#   tests/nbd/bench/run-nbd-bench.sh [build-dir] [size]     (default build, 1G)
set -eu
BUILD=${1:-build}
SIZE=${2:-1G}
IMG_NBD=$(cd "$BUILD" && pwd)/tools/img-nbd/img-nbd
RUNTIME=${RUNTIME:-10}
T=$(mktemp -d)
trap 'for p in $T/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done; rm -rf "$T"' EXIT

# A fully allocated image, so reads measure data, not holes.
qemu-img create -q -f qcow2 "$T/disk.qcow2" "$SIZE"
qemu-io -f qcow2 -c "write -P 0x5a 0 $SIZE" "$T/disk.qcow2" >/dev/null
BYTES=$(qemu-img info --output=json "$T/disk.qcow2" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')

serve() {  # serve NAME BINARY
  "$2" --fork --pid-file "$T/$1.pid" -k "$T/$1.sock" -t -e 8 --cache=none -f qcow2 "$T/disk.qcow2"
}
stop() {
  kill "$(cat "$T/$1.pid")"
  while [ -e "$T/$1.sock" ] && kill -0 "$(cat "$T/$1.pid")" 2>/dev/null; do sleep 0.05; done
  sleep 0.2
}
uri() { echo "nbd+unix:///?socket=$T/$1.sock"; }

seq_read() {  # MiB/s of nbdcopy to /dev/null
  s=$(date +%s.%N)
  nbdcopy "$(uri "$1")" null:
  e=$(date +%s.%N)
  echo "$s $e" | awk -v size="$BYTES" '{ printf "%.0f", size / 1048576 / ($2 - $1) }'
}
fio_iops() {  # fio_iops NAME randread|randwrite
  fio --name=b --ioengine=nbd --uri="$(uri "$1")" --rw="$2" --bs=4k --iodepth=32 \
    --time_based --runtime="$RUNTIME" --size="$SIZE" --output-format=terse --terse-version=3 |
    awk -F';' -v rw="$2" '/^3;/ { print (rw == "randread") ? $8 : $49 }'
}

for s in img qemu; do
  if [ $s = img ]; then serve $s "$IMG_NBD"; else serve $s qemu-nbd; fi
  eval "${s}_seq=\$(seq_read $s)"
  eval "${s}_rr=\$(fio_iops $s randread)"
  eval "${s}_rw=\$(fio_iops $s randwrite)"
  stop $s
done
ratio() { echo "$1 $2" | awk '{ printf "%.2f", $1 / $2 }'; }
printf '%-32s %12s %12s %8s\n' pattern img-nbd qemu-nbd ratio
printf '%-32s %12s %12s %8s\n' "nbdcopy to null (MiB/s)" "$img_seq" "$qemu_seq" "$(ratio "$img_seq" "$qemu_seq")"
printf '%-32s %12s %12s %8s\n' "fio 4k randread qd32 (IOPS)" "$img_rr" "$qemu_rr" "$(ratio "$img_rr" "$qemu_rr")"
printf '%-32s %12s %12s %8s\n' "fio 4k randwrite qd32 (IOPS)" "$img_rw" "$qemu_rw" "$(ratio "$img_rw" "$qemu_rw")"
