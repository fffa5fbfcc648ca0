#!/bin/bash
# Linux smoke test for `vmm run`: Debian's cloud kernel must start printing on our serial port.
# Usage: linux_smoke.sh VMM_BINARY CACHE_DIR
# Fetches linux-image-6.1.0-*-cloud-amd64 once with `apt-get download` into CACHE_DIR, boots
#  1. the uncompressed vmlinux through its PVH entry (fast under an emulating hypervisor), and
#  2. the bzImage through the 64-bit boot protocol entry (VMM_SMOKE_BZIMAGE=0 to skip),
# each passing when "Linux version" appears within LIMIT seconds (default 240).
# Exit 77 (ctest skip) when the package cannot be fetched or /dev/kvm is unusable.
set -uo pipefail
VMM=$1
CACHE=$2
LIMIT=${LIMIT:-240}
mkdir -p "$CACHE"
skip() { echo "SKIP: $*"; exit 77; }
[ -r /dev/kvm ] && [ -w /dev/kvm ] || skip "/dev/kvm missing or not accessible"

if ! ls "$CACHE"/linux-image-*-cloud-amd64_*.deb >/dev/null 2>&1; then
  command -v apt-get >/dev/null || skip "no apt-get to fetch the kernel"
  resolve() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
  KPKG=$(resolve)
  [ -n "$KPKG" ] || { apt-get update -qq >/dev/null 2>&1; KPKG=$(resolve); }
  [ -n "$KPKG" ] || skip "cannot resolve linux-image-cloud-amd64 (apt-get update failed?)"
  (cd "$CACHE" && apt-get download -qq "$KPKG" >/dev/null 2>&1) || skip "apt-get download $KPKG failed"
fi
DEB=$(ls "$CACHE"/linux-image-*-cloud-amd64_*.deb | head -1)
if [ ! -f "$CACHE/vmlinuz" ]; then
  rm -rf "$CACHE/x" && dpkg -x "$DEB" "$CACHE/x" || skip "dpkg -x failed"
  cp "$CACHE"/x/boot/vmlinuz-* "$CACHE/vmlinuz"
  rm -rf "$CACHE/x"
fi
if [ ! -f "$CACHE/vmlinux" ] && command -v lz4 >/dev/null; then
  # Debian compresses the payload with LZ4 (legacy frame magic 02 21 4c 18).
  python3 - "$CACHE/vmlinuz" "$CACHE/payload.lz4" <<'PY'
import sys
d = open(sys.argv[1], 'rb').read()
i = d.find(b'\x02\x21\x4c\x18')
open(sys.argv[2], 'wb').write(d[i:] if i > 0 else b'')
PY
  lz4 -dc "$CACHE/payload.lz4" > "$CACHE/vmlinux.tmp" 2>/dev/null   # trailing data: nonzero rc
  rm -f "$CACHE/payload.lz4"
  [ -s "$CACHE/vmlinux.tmp" ] && mv "$CACHE/vmlinux.tmp" "$CACHE/vmlinux"
fi

boot() {  # name kernel
  local name=$1 kernel=$2 serial="$CACHE/$1.serial" start=$SECONDS
  rm -f "$serial"
  "$VMM" run --kernel "$kernel" --memory 512M --cmdline "console=ttyS0 earlyprintk=serial" \
      --serial "file:$serial" </dev/null >"$CACHE/$name.stderr" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if grep -q "Linux version" "$serial" 2>/dev/null; then
      kill "$pid"; wait "$pid" 2>/dev/null
      echo "PASS: $name printed 'Linux version' after $((SECONDS - start)) s"
      return 0
    fi
    if [ $((SECONDS - start)) -ge "$LIMIT" ]; then
      kill "$pid"; wait "$pid" 2>/dev/null
      echo "FAIL: $name: no 'Linux version' within $LIMIT s"; tail -5 "$serial" "$CACHE/$name.stderr"
      return 1
    fi
    sleep 1
  done
  wait "$pid"; local rc=$?
  if grep -q "Linux version" "$serial" 2>/dev/null; then
    echo "PASS: $name printed 'Linux version' (vmm exited $rc after $((SECONDS - start)) s)"
    return 0
  fi
  echo "FAIL: $name: vmm exited $rc before 'Linux version'"; cat "$CACHE/$name.stderr"
  return 1
}

rc=0
if [ -f "$CACHE/vmlinux" ]; then boot pvh "$CACHE/vmlinux" || rc=1; else echo "no lz4: PVH boot skipped"; fi
if [ "${VMM_SMOKE_BZIMAGE:-1}" = 1 ]; then boot bzimage "$CACHE/vmlinuz" || rc=1; fi
exit $rc
