#!/usr/bin/env bash
# Makes the fuzzers' seed corpora from real images and real requests: qemu-img and qemu-io
# (QEMU 7.2, the reference) make every feature libimg reads, img (libimg) makes its own, and the
# VMM's freestanding test guest is a real ELF kernel. Seeds are small on purpose (512-byte and
# 4 KiB clusters, images of a few clusters) so a fuzzer mutates headers and tables, not data.
#   testdata/fuzz/make-seeds.sh [BUILD_DIR]   (default build/; img and the test guest come from it)
# Writes testdata/fuzz/<target>/seed-*; corpus files a fuzzer added (named by hash) are kept.
# Deterministic apart from timestamps QEMU writes into snapshot entries.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BUILD="${1:-$ROOT/build}"
IMG="$BUILD/tools/img/img"
GUEST="$BUILD/vmm/guest/test_guest.elf"
W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT

for t in qemu-img qemu-io python3; do
  command -v "$t" >/dev/null || { echo "make-seeds: $t is missing (apt-get install qemu-utils python3)" >&2; exit 1; }
done

qi() { qemu-img "$@" >/dev/null; }
qio() { qemu-io "$@" >/dev/null; }
# A qcow2 image with a few written, zeroed and discarded clusters.
mk() {  # mk NAME "create options" [SIZE]
  local f="$W/$1.qcow2"
  qi create -f qcow2 -o "$2" "$f" "${3:-64k}"
  qio -f qcow2 -c "write -P 0x11 0 1k" -c "write -P 0x22 8k 2k" -c "write -z 16k 4k" \
      -c "write -P 0x33 24k 512" -c "discard 24k 512" "$f"
  echo "$f"
}

images=()
images+=("$(mk v3-512 cluster_size=512)")
images+=("$(mk v3-4k cluster_size=4096)")
images+=("$(mk v2-512 compat=0.10,cluster_size=512)")
images+=("$(mk refcount1 cluster_size=512,refcount_bits=1)")
images+=("$(mk refcount64 cluster_size=512,refcount_bits=64)")
images+=("$(mk lazy cluster_size=512,lazy_refcounts=on)")
images+=("$(mk extl2 cluster_size=16384,extended_l2=on)")
images+=("$(mk prealloc cluster_size=512,preallocation=metadata 8k)")
# Compressed clusters, deflate and zstd (convert -c of a source with compressible data).
qi create -f qcow2 -o cluster_size=512 "$W/src.qcow2" 16k
qio -f qcow2 -c "write -P 0x41 0 4k" -c "write -P 0x42 6k 1k" "$W/src.qcow2"
qi convert -c -O qcow2 -o cluster_size=512 "$W/src.qcow2" "$W/zlib.qcow2"
qi convert -c -O qcow2 -o cluster_size=512,compression_type=zstd "$W/src.qcow2" "$W/zstd.qcow2"
images+=("$W/zlib.qcow2" "$W/zstd.qcow2")
# An internal snapshot, and a persistent dirty bitmap (the bitmaps extension).
cp "$W/v3-512.qcow2" "$W/snapshot.qcow2"
qi snapshot -c snap1 "$W/snapshot.qcow2"
qio -f qcow2 -c "write -P 0x44 0 512" "$W/snapshot.qcow2"
cp "$W/v3-4k.qcow2" "$W/bitmap.qcow2"
qi bitmap --add "$W/bitmap.qcow2" bm0
qi bitmap --add -g 65536 "$W/bitmap.qcow2" bm1
images+=("$W/snapshot.qcow2" "$W/bitmap.qcow2")
# An overlay on a base, alone (the driver target resolves its backing name to itself).
qi create -f qcow2 -o cluster_size=512 "$W/base.qcow2" 64k
qio -f qcow2 -c "write -P 0x55 0 4k" "$W/base.qcow2"
qi create -f qcow2 -o cluster_size=512 -b base.qcow2 -F qcow2 "$W/overlay.qcow2"
qio -f qcow2 -c "write -P 0x66 512 512" "$W/overlay.qcow2"
images+=("$W/overlay.qcow2")
# libimg's own images.
if [[ -x "$IMG" ]]; then
  "$IMG" create -q -f qcow2 -o cluster_size=512 "$W/img-created.qcow2" 64k
  "$IMG" convert -c -O qcow2 -o cluster_size=512 "$W/src.qcow2" "$W/img-zlib.qcow2"
  "$IMG" convert -c -O qcow2 -o cluster_size=512,compression_type=zstd "$W/src.qcow2" \
    "$W/img-zstd.qcow2"
  images+=("$W/img-created.qcow2" "$W/img-zlib.qcow2" "$W/img-zstd.qcow2")
else
  echo "make-seeds: $IMG not built; libimg-made seeds skipped" >&2
fi

put() {  # put TARGET NAME FILE
  mkdir -p "$HERE/$1"
  cp "$3" "$HERE/$1/seed-$2"
}
for f in "${images[@]}"; do
  n="$(basename "$f" .qcow2)"
  put qcow2_driver "$n" "$f"
  put qcow2_check "$n" "$f"
  # The header target reads the first cluster (and the tables' bounds from the file size).
  head -c 4096 "$f" >"$W/head"
  put qcow2_header "$n" "$W/head"
done

# Compressed cluster streams, cut from the images above: byte 0 is the codec and cluster size
# as qcow2_compress_fuzz.cc reads it, the rest one compressed cluster as the L2 entry names it.
python3 - "$W" "$HERE/qcow2_compress" <<'EOF'
import os, struct, sys
w, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
for name in ("zlib", "zstd", "img-zlib", "img-zstd"):
    p = os.path.join(w, name + ".qcow2")
    if not os.path.exists(p):
        continue
    d = open(p, "rb").read()
    bits = struct.unpack(">I", d[20:24])[0]
    l1 = struct.unpack(">Q", d[40:48])[0]
    l2 = struct.unpack(">Q", d[l1:l1 + 8])[0] & 0x00fffffffffffe00
    x = 62 - (bits - 8)
    for i in range(2):
        e = struct.unpack(">Q", d[l2 + 8 * i:l2 + 8 * i + 8])[0]
        if not (e >> 62) & 1:
            continue
        off = e & ((1 << x) - 1)
        n = ((e >> x) & ((1 << (bits - 8)) - 1)) + 1
        size = n * 512 - (off & 511)
        codec = 1 if "zstd" in name else 0
        sel = codec | ((bits - 9) << 1)  # cluster size 512 << ((byte >> 1) % 13)
        open(os.path.join(out, "seed-%s-%d" % (name, i)), "wb").write(bytes([sel]) + d[off:off + size])
EOF

# Backing chains for qcow2_chain_fuzz.cc: "path\n" + bytes per file, joined by #IMGFUZZ#.
cd "$W"
mkdir -p d
qi create -f qcow2 -o cluster_size=512 d/base.qcow2 64k
qio -f qcow2 -c "write -P 0x55 0 4k" d/base.qcow2
qi create -f raw d/base.raw 4k
qi create -f qcow2 -o cluster_size=512 -b base.qcow2 -F qcow2 d/mid.qcow2
qio -f qcow2 -c "write -P 0x66 512 512" d/mid.qcow2
qi create -f qcow2 -o cluster_size=512 -b mid.qcow2 -F qcow2 d/top.qcow2
qi create -f qcow2 -o cluster_size=512 -b base.raw -F raw d/on-raw.qcow2 64k
qi create -f qcow2 -o cluster_size=512 -b ../d/base.qcow2 -F qcow2 d/relative.qcow2
qi create -f qcow2 -o cluster_size=512 -b loop-b.qcow2 -F qcow2 -u d/loop-a.qcow2 64k
qi create -f qcow2 -o cluster_size=512 -b loop-a.qcow2 -F qcow2 -u d/loop-b.qcow2 64k
qi create -f qcow2 -o cluster_size=512 -b self.qcow2 -F qcow2 -u d/self.qcow2 64k
qi create -f qcow2 -o cluster_size=512 -b missing.qcow2 -F qcow2 -u d/dangling.qcow2 64k
python3 - "$HERE/qcow2_chain" <<'EOF'
import os, sys
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
def pack(name, files):
    parts = [("d/" + f + "\n").encode() + open("d/" + f, "rb").read() for f in files]
    open(os.path.join(out, "seed-" + name), "wb").write(b"#IMGFUZZ#".join(parts))
pack("three", ["top.qcow2", "mid.qcow2", "base.qcow2"])
pack("two", ["mid.qcow2", "base.qcow2"])
pack("on-raw", ["on-raw.qcow2", "base.raw"])
pack("relative", ["relative.qcow2", "base.qcow2"])
pack("loop", ["loop-a.qcow2", "loop-b.qcow2"])
pack("self", ["self.qcow2"])
pack("dangling", ["dangling.qcow2"])
EOF

# img's options: sizes and -o strings as qemu-img's documentation and iotests write them. Byte 0
# picks the format (bit 0: qcow2) and the size limit (bit 1: 2^64) as img_options_fuzz.cc reads it.
opt() {  # opt NAME BYTE0 LINES...
  local name="$1" b="$2"
  shift 2
  mkdir -p "$HERE/img_options"
  { printf "\\x$b"; printf '%s\n' "$@" | head -c -1; } >"$HERE/img_options/seed-$name"
}
opt sizes 01 1.5G "cluster_size=64k,compat=1.1" "size=10M"
opt qcow2-all 01 64k "compat=v3,cluster_size=512,refcount_bits=1,lazy_refcounts=on" \
  "compression_type=zstd,extended_l2=off,preallocation=metadata"
opt backing 01 0x200 "backing_file=a,,b.qcow2,backing_fmt=qcow2" "help"
opt v2 01 +1G "compat=0.10,refcount_bits=16" "lazy_refcounts"
opt raw 00 -512M "preallocation=falloc,size=1E" "?"
opt big 02 16E "size=8E" "cluster_size=2M"

# Kernels: the freestanding test guest (a real ELF64, entered at e_entry) and a bzImage whose
# setup header follows Documentation/arch/x86/boot.rst (protocol 2.15, relocatable, 64-bit).
mkdir -p "$HERE/vmm_kernel_loader"
if [[ -f "$GUEST" ]]; then
  cp "$GUEST" "$HERE/vmm_kernel_loader/seed-test-guest.elf"
else
  echo "make-seeds: $GUEST not built; ELF seed skipped" >&2
fi
python3 - "$HERE/vmm_kernel_loader" <<'EOF'
import os, struct, sys
out = sys.argv[1]
def bzimage(relocatable, pref=0x1000000, align=0x200000, setup_sects=4, payload=4096):
    f = bytearray((setup_sects + 1) * 512 + payload)
    f[0x1f1] = setup_sects
    f[0x1fe:0x200] = b"\x55\xaa"
    f[0x200] = 0xeb; f[0x201] = 0x6a                  # jump: header ends at 0x26c
    f[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", f, 0x206, 0x020f)           # protocol 2.15
    f[0x211] = 0x01                                   # LOADED_HIGH
    struct.pack_into("<I", f, 0x22c, 0x7fffffff)       # initrd_addr_max
    struct.pack_into("<I", f, 0x230, align)            # kernel_alignment
    f[0x234] = 1 if relocatable else 0
    struct.pack_into("<H", f, 0x236, 0x1 | 0x2)        # XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    struct.pack_into("<I", f, 0x238, 2047)             # cmdline_size
    struct.pack_into("<Q", f, 0x258, pref)             # pref_address
    struct.pack_into("<I", f, 0x260, 0x200000)         # init_size
    return bytes(f)
open(os.path.join(out, "seed-bzimage-reloc"), "wb").write(bzimage(True))
open(os.path.join(out, "seed-bzimage-fixed"), "wb").write(bzimage(False, pref=0x100000))
# A minimal ELF64 with a PT_LOAD and a Xen PVH note (XEN_ELFNOTE_PHYS32_ENTRY), as vmlinux has.
note = struct.pack("<III", 4, 4, 18) + b"Xen\0" + struct.pack("<I", 0x1000040)
code = b"\xf4" * 64
phoff, nph = 64, 2
data_off = phoff + 56 * nph
eh = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
eh += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x1000000, phoff, 0, 0, 64, 56, nph, 0, 0, 0)
ph = struct.pack("<IIQQQQQQ", 1, 5, data_off + len(note), 0x1000000, 0x1000000, len(code), 0x2000, 0x1000)
ph += struct.pack("<IIQQQQQQ", 4, 4, data_off, 0, 0, len(note), len(note), 4)
open(os.path.join(out, "seed-elf-pvh"), "wb").write(eh + ph + note + code)
EOF
echo "make-seeds: done"; for d in "$HERE"/*/; do echo "  $(basename "$d"): $(ls "$d" | wc -l) files"; done
