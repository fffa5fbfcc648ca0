#!/bin/bash
# Builds a small Linux guest for `vmm run` from Debian packages:
#   OUT/vmlinuz            Debian's cloud kernel (bzImage)
#   OUT/vmlinux            the same kernel uncompressed (ELF with the PVH entry note)
#   OUT/initramfs.cpio.gz  busybox + the virtio modules + ./init
#   OUT/disk.qcow2         a 64 MiB ext4 disk holding hello.txt
# Usage: build-guest.sh [WORKDIR]   (default /tmp/vmm-linux-guest; OUT = WORKDIR/out)
# Needs: apt-get (download only), dpkg, kmod (depmod), lz4, python3, cpio or busybox,
#        gzip, e2fsprogs (mkfs.ext4 -d), qemu-utils (qemu-img) or our build/tools/img/img.
set -euo pipefail
W=${1:-/tmp/vmm-linux-guest}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$W/out
mkdir -p "$W/debs" "$OUT"

cd "$W/debs"
KPKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$KPKG" ] || { echo "cannot resolve the cloud kernel package: run apt-get update" >&2; exit 1; }
ls "${KPKG}"_*.deb >/dev/null 2>&1 || apt-get download "$KPKG"
ls busybox-static_*.deb >/dev/null 2>&1 || apt-get download busybox-static

X=$W/x
rm -rf "$X" && mkdir -p "$X"
dpkg -x "${KPKG}"_*.deb "$X/kernel"
dpkg -x busybox-static_*.deb "$X/busybox"
KV=$(ls "$X/kernel/lib/modules")
MODDIR=$X/kernel/lib/modules/$KV
depmod -b "$X/kernel" "$KV"   # Debian's package ships no modules.dep
cp "$X/kernel/boot/vmlinuz-$KV" "$OUT/vmlinuz"

# The bzImage payload is LZ4 (legacy frame, magic 02 21 4c 18); decompressing it gives the ELF
# vmlinux, which carries XEN_ELFNOTE_PHYS32_ENTRY so `vmm run` enters it through PVH.
python3 - "$OUT/vmlinuz" "$X/payload.lz4" <<'PY'
import sys
data = open(sys.argv[1], 'rb').read()
at = data.find(b'\x02\x21\x4c\x18')
if at < 0:
    sys.exit('no LZ4 payload in the bzImage')
open(sys.argv[2], 'wb').write(data[at:])
PY
lz4 -dc "$X/payload.lz4" > "$OUT/vmlinux" 2>/dev/null || true   # trailing bytes make lz4 complain
readelf -n "$OUT/vmlinux" | grep -q '(0x00000012)' || { echo "vmlinux has no PVH note" >&2; exit 1; }

# Initramfs: busybox applets, the virtio modules in dependency order, our /init.
R=$X/root
mkdir -p "$R"/{bin,dev,proc,sys,mnt,tmp,lib/modules}
cp "$X/busybox/bin/busybox" "$R/bin/"
for applet in $("$R/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$R/bin/$applet"
done
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
  f=$(find "$MODDIR/kernel" -name "$m.ko" | head -1)
  [ -n "$f" ] || { echo "module $m not found" >&2; exit 1; }
  cp "$f" "$R/lib/modules/"
done
mknod -m 600 "$R/dev/console" c 5 1 2>/dev/null || true
install -m 755 "$HERE/init" "$R/init"
if command -v cpio >/dev/null; then
  (cd "$R" && find . | cpio -o -H newc --quiet | gzip -9) > "$OUT/initramfs.cpio.gz"
else
  (cd "$R" && find . | "$R/bin/busybox" cpio -o -H newc | gzip -9) > "$OUT/initramfs.cpio.gz"
fi

# The ext4 disk, then qcow2.
D=$X/disk
mkdir -p "$D"
echo "hello from the ext4 test disk" > "$D/hello.txt"
rm -f "$X/disk.raw"
mkfs.ext4 -q -F -L vmmtest -d "$D" "$X/disk.raw" 64M
IMG=$(cd "$HERE/../.." && pwd)/build/tools/img/img
if [ -x "$IMG" ]; then "$IMG" convert -f raw -O qcow2 "$X/disk.raw" "$OUT/disk.qcow2"
else qemu-img convert -f raw -O qcow2 "$X/disk.raw" "$OUT/disk.qcow2"; fi
ls -l "$OUT"
