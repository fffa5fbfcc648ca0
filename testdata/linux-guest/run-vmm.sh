#!/bin/bash
# Boots the guest that build-guest.sh made with `vmm run`.
# Usage: run-vmm.sh [WORKDIR] [pvh|bzimage]   (VMM=path/to/vmm, CPUS=, MEM=, EXTRA= cmdline)
set -euo pipefail
W=${1:-/tmp/vmm-linux-guest}
MODE=${2:-bzimage}
HERE=$(cd "$(dirname "$0")" && pwd)
VMM=${VMM:-$HERE/../../build/vmm/vmm}
KERNEL=$W/out/vmlinuz
[ "$MODE" = pvh ] && KERNEL=$W/out/vmlinux
exec "$VMM" run --kernel "$KERNEL" --initrd "$W/out/initramfs.cpio.gz" \
  --memory "${MEM:-512M}" --cpus "${CPUS:-2}" --disk "$W/out/disk.qcow2,format=qcow2" \
  --cmdline "console=ttyS0 reboot=k panic=-1 printk_devkmsg=on ${EXTRA:-}"
