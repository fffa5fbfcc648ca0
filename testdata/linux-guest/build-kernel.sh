#!/bin/bash
# Builds the vmm test kernel from Debian's linux-source-6.1 and caches it.
#
#   build-kernel.sh            prints the cache folder holding vmlinux, bzImage and config
#
# The kernel is tinyconfig + kernel.fragment with kernel.patch applied (three changes
# that let Linux run under kvm_pvm's CPL0 emulator: no int3 self-test, user-mode int $0x80 taken
# from #UD, no x87 fwait when a task exits; see docs/vmm.md "A real Linux guest"). The result lands in
#   ${IMG_LINUX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/img-linux-guest}/<key>/
# where <key> hashes the source package version, the patch, the fragment and the compiler,
# so a second run finds it and returns at once. Concurrent runs wait on a lock.
# Missing build packages are installed with apt-get (as root); JOBS= sets make -j (default 2).
# Progress goes to stderr, the build log to <cache>/build-<key>.log.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${IMG_LINUX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/img-linux-guest}
JOBS=${JOBS:-2}
PACKAGES=(linux-source-6.1 bc flex bison libelf-dev libssl-dev cpio make gcc lz4 xz-utils)
say() { echo "build-kernel: $*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { say "missing packages (run as root or install): ${missing[*]}"; exit 1; }
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
      </dev/null >&2 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        </dev/null >&2; }
fi

SRC_VERSION=$(dpkg-query -W -f='${Version}' linux-source-6.1)
TARBALL=/usr/src/linux-source-6.1.tar.xz
KEY=$( { echo "linux-source-6.1 $SRC_VERSION"; gcc --version | head -1;
         cat "$HERE/kernel.patch" "$HERE/kernel.fragment"; } | sha256sum | cut -c1-16)
OUT=$CACHE/$KEY
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock 9
if [ -f "$OUT/vmlinux" ] && [ -f "$OUT/bzImage" ]; then
  say "cached: $OUT"
  echo "$OUT"
  exit 0
fi

W=$CACHE/build-$KEY
LOG=$CACHE/build-$KEY.log
rm -rf "$W" && mkdir -p "$W"
start=$SECONDS
say "unpacking $TARBALL ($SRC_VERSION) into $W"
tar -C "$W" -xf "$TARBALL"
S=$W/linux-source-6.1
patch -d "$S" -p1 --quiet <"$HERE/kernel.patch"
say "configuring (tinyconfig + kernel.fragment)"
{
  make -C "$S" tinyconfig
  (cd "$S" && scripts/kconfig/merge_config.sh -m .config "$HERE/kernel.fragment")
  make -C "$S" olddefconfig
} >"$LOG" 2>&1
# merge_config.sh only warns when olddefconfig drops an option: every =y line must survive.
while IFS= read -r line; do
  case $line in CONFIG_*=y)
    grep -qx "$line" "$S/.config" || { say "option lost in .config: $line (see $LOG)"; exit 1; } ;;
  esac
done <"$HERE/kernel.fragment"
say "make -j$JOBS vmlinux bzImage (log: $LOG)"
if ! make -C "$S" -j"$JOBS" vmlinux bzImage >>"$LOG" 2>&1; then
  tail -30 "$LOG" >&2
  say "kernel build failed (log: $LOG)"
  exit 1
fi
mkdir -p "$OUT.tmp"
cp "$S/vmlinux" "$S/arch/x86/boot/bzImage" "$OUT.tmp/"
cp "$S/.config" "$OUT.tmp/config"
echo "$SRC_VERSION" >"$OUT.tmp/source-version"
echo "$((SECONDS - start))" >"$OUT.tmp/build-seconds"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
rm -rf "$W"
say "built in $((SECONDS - start)) s: $OUT"
echo "$OUT"
