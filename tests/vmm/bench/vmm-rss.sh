#!/usr/bin/env bash
# VMM memory overhead: RSS of a running `vmm run` minus the RSS of its guest RAM mapping
# (Firecracker's bar: 5 MiB), without a disk and with a qcow2 --disk.
#   tests/vmm/bench/vmm-rss.sh [BUILD_DIR]          (default build/; needs build/vmm/vmm)
# Environment:
#   KERNEL   a PVH vmlinux (default: BUILD_DIR/tests/vmm/linux-cache/vmlinux, fetched with
#            tests/vmm/linux_smoke.sh, which runs `apt-get download` of Debian's cloud kernel)
#   MEMORY   guest memory (default 512M)      RUNS  runs per configuration (default 2)
#   WORK     scratch folder (default /tmp/vmm-rss)
# The guest is Debian's 6.1 kernel booted through PVH with `console=ttyS0 earlyprintk=serial`;
# it runs ~20 s under the kvm_pvm emulator before it stops (docs/vmm.md), longer or forever on
# hardware KVM (we stop it after the samples). /proc/PID/smaps is read once a second from the
# moment "Linux version" is on the serial port; each run reports its last sample and the
# largest overhead seen. The guest RAM mapping is the one anonymous mapping whose size is
# exactly MEMORY (vmm maps guest RAM as one MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE region).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
BUILD_DIR="$(cd "${1:-$ROOT/build}" && pwd)"
VMM="$BUILD_DIR/vmm/vmm"
IMG="$BUILD_DIR/tools/img/img"
MEMORY="${MEMORY:-512M}"
RUNS="${RUNS:-2}"
WORK="${WORK:-/tmp/vmm-rss}"
SAMPLES="${SAMPLES:-10}"   # at most this many samples (seconds) per run
[[ -x "$VMM" && -x "$IMG" ]] || { echo "vmm-rss: build $VMM and $IMG first" >&2; exit 1; }
[[ -r /dev/kvm && -w /dev/kvm ]] || { echo "vmm-rss: /dev/kvm missing or not accessible: skipped"; exit 0; }

KERNEL="${KERNEL:-$BUILD_DIR/tests/vmm/linux-cache/vmlinux}"
if [[ ! -f "$KERNEL" ]]; then
  echo "vmm-rss: fetching Debian's cloud kernel with tests/vmm/linux_smoke.sh ..."
  VMM_SMOKE_BZIMAGE=0 "$ROOT/tests/vmm/linux_smoke.sh" "$VMM" "$(dirname "$KERNEL")" || true
  [[ -f "$KERNEL" ]] || { echo "vmm-rss: no PVH vmlinux at $KERNEL (set KERNEL=...)" >&2; exit 1; }
fi

mem_kib=$(( $(numfmt --from=iec "${MEMORY%B}") / 1024 ))
rm -rf "$WORK" && mkdir -p "$WORK"
"$IMG" create -q -f qcow2 "$WORK/disk.qcow2" 1G
head -c 64M < <(yes "vmm-rss data") > "$WORK/data.raw"
"$IMG" convert -n -f raw -O qcow2 "$WORK/data.raw" "$WORK/disk.qcow2"

# smaps -> "total_rss guest_rss guest_size anon_rss file_rss" in KiB
measure() {
  awk -v mem="$mem_kib" '
    /^[0-9a-f]+-[0-9a-f]+ / { size = -1; next }
    /^Size:/ { size = $2; next }
    /^Rss:/ { rss = $2; total += rss; if (size == mem && !found) { guest = rss; found = 1 }; next }
    /^Anonymous:/ { anon += $2; next }
    END { printf "%d %d %d %d\n", total, guest, found ? mem : 0, anon }' "/proc/$1/smaps"
}

run_one() {  # label extra-args...
  local label=$1; shift
  local serial="$WORK/serial.txt" last="" worst=0 n=0 start=$SECONDS
  rm -f "$serial"
  "$VMM" run --kernel "$KERNEL" --memory "$MEMORY" --cmdline "console=ttyS0 earlyprintk=serial" \
      --serial "file:$serial" "$@" </dev/null >"$WORK/vmm.out" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null && ! grep -q "Linux version" "$serial" 2>/dev/null; do
    sleep 0.2
    (( SECONDS - start < 60 )) || break
  done
  while kill -0 "$pid" 2>/dev/null && (( n < SAMPLES )); do
    local s; s=$(measure "$pid" 2>/dev/null) || break
    read -r total guest gsize anon <<<"$s"
    [[ "$gsize" != 0 ]] || { echo "vmm-rss: no $mem_kib KiB mapping in /proc/$pid/smaps" >&2; break; }
    last="$total $guest $anon"
    (( total - guest > worst )) && worst=$(( total - guest ))
    n=$((n + 1))
    sleep 1
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [[ -n "$last" ]] || { echo "$label: no sample (guest stopped early?)"; cat "$WORK/vmm.out"; return 1; }
  read -r total guest anon <<<"$last"
  printf '| %-22s | %6d | %6d | %6d | %6d | %6d | %6d | %2d |\n' "$label" "$total" "$guest" \
    $((total - guest)) $((anon - guest)) $((total - anon)) "$worst" "$n"
}

echo "vmm $MEMORY guest (PVH vmlinux: $KERNEL), figures in KiB, $RUNS runs each"
echo
echo "| configuration          | Rss    | guest  | Rss-guest | anon-guest | file | max Rss-guest | samples |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for i in $(seq "$RUNS"); do
  run_one "no disk" </dev/null
  run_one "qcow2 --disk (1 GiB)" --disk "$WORK/disk.qcow2,format=qcow2" </dev/null
done
"$IMG" check -q "$WORK/disk.qcow2" && echo && echo "img check: the qcow2 image is clean"
rm -rf "$WORK"
