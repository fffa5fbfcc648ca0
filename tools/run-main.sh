#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: set up and build (tools/setup.sh), then make a
# qcow2 image with img create, write a data pattern into it with img convert, and show img info
# and img check of it; then boot the freestanding test guest with vmm on a second qcow2 image made
# with img (the guest checks the host's pattern and writes its own through virtio-blk), and check
# that image with img check and qemu-img check after the guest's writes; then boot a real Linux
# (the test kernel, built once and cached) with two vCPUs off an ext4 qcow2 image made by img,
# and check its writes with img check, e2fsck and debugfs. Without /dev/kvm the guest steps are
# skipped with a message (exit 0).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. tools/setup.sh

IMG="$BUILD_DIR/tools/img/img"
WORK="$BUILD_DIR/demo"
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"

step() { printf '\n$ %s\n' "$*"; "$@"; }

# A 64 MiB raw file: a text pattern in its first 8 MiB and at 32 MiB, holes elsewhere.
truncate -s 64M pattern.raw
# (yes dies of SIGPIPE when head has enough; process substitution keeps that out of pipefail)
head -c 8M < <(yes "libimg pattern block") | dd of=pattern.raw conv=notrunc status=none
head -c 1M < <(yes "second extent") | dd of=pattern.raw bs=1M seek=32 conv=notrunc status=none

step "$IMG" create -f qcow2 disk.qcow2 1G
step "$IMG" convert -n -p -f raw -O qcow2 pattern.raw disk.qcow2
step "$IMG" info disk.qcow2
step "$IMG" check disk.qcow2
if command -v qemu-img >/dev/null; then
  # The reference agrees: same data (the image is larger than the pattern, so compare the
  # pattern's 64 MiB through a raw copy), and its own check is clean.
  step "$IMG" convert -O raw disk.qcow2 back.raw
  step cmp -n $((64 << 20)) pattern.raw back.raw
  step qemu-img check disk.qcow2
fi

# ---- VMM: boot the test guest on a qcow2 image ----------------------------------------------
VMM="$BUILD_DIR/vmm/vmm"
GUEST="$BUILD_DIR/vmm/guest/test_guest.elf"
if [[ ! -e /dev/kvm ]]; then
  echo
  echo "run-main: /dev/kvm is missing: skipping the vmm guest boot (it needs KVM; 'vmm check' says"
  echo "run-main: what this host lacks). Image in $WORK/disk.qcow2"
  exit 0
fi

# The guest (vmm/guest/virtio_blk.c) expects a 64 MiB disk with 0x5a ('Z') over its first MiB
# and zeros after it; it checks that, writes its own pattern (little-endian 64-bit words
# 0xa5a5000000000000 | offset) across cluster boundaries at 60 KiB, 1 MiB - 512, 2 MiB + 512,
# 3 MiB and 4 MiB, flushes, write-zeroes and discards, prints GUEST: PASS and resets (exit 0).
truncate -s 64M guest.raw
head -c 1M /dev/zero | tr '\0' 'Z' | dd of=guest.raw conv=notrunc status=none
step "$IMG" convert -f raw -O qcow2 guest.raw guest.qcow2
step "$VMM" check
printf '\n$ %s\n' "$VMM run --kernel $GUEST --memory 64M --disk guest.qcow2,format=qcow2"
rc=0
"$VMM" run --kernel "$GUEST" --memory 64M --disk guest.qcow2,format=qcow2 || rc=$?
echo "vmm exit code: $rc"
step "$IMG" check guest.qcow2
if command -v qemu-img >/dev/null; then
  step qemu-img check guest.qcow2
fi
# The guest's words at 60 KiB (0xf000): offset | 0xa5a5000000000000
step "$IMG" convert -O raw guest.qcow2 guest-after.raw
step od -A x -t x8 -j $((60 << 10)) -N 32 guest-after.raw

if [[ $rc != 0 ]]; then
  echo "run-main: the test guest failed (vmm exit code $rc)" >&2
  exit 1
fi

# ---- VMM: boot a real Linux off a qcow2 image made by img ---------------------------------
# The test kernel (Debian's linux-source-6.1, tinyconfig + virtio, three small patches for this
# emulator: docs/vmm.md) is built on the first run, ~9 min on 2 idle cores, then cached. Its
# /init (testdata/linux-guest/test-init.c) mounts the ext4 file system on /dev/vda, reads the
# host's file, writes its own, unmounts and powers off; the host then checks what it wrote.
echo
echo "run-main: building or finding the Linux test kernel (first run: ~9 min)"
KDIR=$("$ROOT/testdata/linux-guest/build-kernel.sh")
ninja -C "$BUILD_DIR" linux_test_initrd >/dev/null
INITRD="$BUILD_DIR/tests/vmm/linux_guest/initrd.cpio"
mkdir -p ext4-src && echo "written by the host with mke2fs -d" > ext4-src/host.txt
step mke2fs -q -t ext4 -L demo -d ext4-src -F linux.raw 32M
step "$IMG" convert -f raw -O qcow2 linux.raw linux.qcow2
CMDLINE="console=ttyS0 reboot=k panic=-1 vdso32=0 quiet ext4dev=vda then=poweroff check=ext4,smp ncpus=2"
printf '\n$ %s\n' "$VMM run --kernel $KDIR/vmlinux --initrd $INITRD --memory 64M --cpus 2 --disk linux.qcow2,format=qcow2 --cmdline '$CMDLINE'"
lrc=0
start=$SECONDS
timeout 900 "$VMM" run --kernel "$KDIR/vmlinux" --initrd "$INITRD" --memory 64M --cpus 2 \
  --disk linux.qcow2,format=qcow2 --cmdline "$CMDLINE" || lrc=$?
echo "vmm exit code: $lrc ($((SECONDS - start)) s)"
step "$IMG" check linux.qcow2
step "$IMG" convert -O raw linux.qcow2 linux-after.raw
step e2fsck -fn linux-after.raw
step debugfs -R "cat /guest.txt" linux-after.raw
if [[ $lrc != 0 ]]; then
  echo "run-main: the Linux guest failed (vmm exit code $lrc)" >&2
  exit 1
fi
echo "run-main: done (images in $WORK: disk.qcow2, guest.qcow2, linux.qcow2)"
