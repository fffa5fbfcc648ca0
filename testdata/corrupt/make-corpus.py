#!/usr/bin/env python3
"""The corrupt-image corpus (docs/hostile-input.md): small qcow2 images made by qemu-img and
qemu-io, then damaged by targeted byte edits at offsets read back from the image (never assumed).
The recipes follow QEMU's iotests 060 (overlapping metadata, L2 entries into the header or L1
table, refcount zero for used clusters) and 080 (huge or misplaced L1, refcount and snapshot
tables), plus reserved bits, compressed clusters and bitmaps past EOF, backing loops.

  testdata/corrupt/make-corpus.py [OUTDIR]      (default: testdata/corrupt/images)

Every image is <name>.qcow2; a few come with the files they name as backing files. Edits are
described by the function that makes each image: the name says what is wrong. The images are
4 KiB-cluster, 1 MiB virtual (a few tens of KiB each), so the whole corpus is small enough for
git; tests/img/corrupt_corpus_test.cc runs img and qemu-img on every one. Layout facts come from
the qcow2 spec (docs/qcow2-format.md): header fields at fixed offsets, L1/L2/refcount-table
entries big-endian 64-bit, bits 9-55 the offset, bit 63 COPIED, bit 62 COMPRESSED, bit 0 ZERO.
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(HERE, "images")
OFF_MASK = 0x00FFFFFFFFFFFE00
COPIED = 1 << 63
COMPRESSED = 1 << 62


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=OUT)


def qemu_io(path, *cmds, fmt="qcow2"):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    run(*args, path)


class Image:
    """Reads the header and locates tables; get/put are big-endian at file offsets."""

    def __init__(self, path):
        self.path = path
        self.f = open(path, "r+b")
        self.version = self.get(4, 4)
        self.cluster_bits = self.get(20, 4)
        self.cs = 1 << self.cluster_bits
        self.l1_size = self.get(36, 4)
        self.l1 = self.get(40, 8)
        self.rt = self.get(48, 8)
        self.nb_snapshots = self.get(60, 4)
        self.snapshots = self.get(64, 8)
        self.refcount_order = self.get(96, 4) if self.version >= 3 else 4
        self.header_length = self.get(100, 4) if self.version >= 3 else 72

    def get(self, off, n):
        self.f.seek(off)
        b = self.f.read(n)
        assert len(b) == n, (self.path, off, n)
        return int.from_bytes(b, "big")

    def put(self, off, v, n):
        self.f.seek(off)
        self.f.write(v.to_bytes(n, "big"))

    def put_bytes(self, off, b):
        self.f.seek(off)
        self.f.write(b)

    def l2(self, i=0):
        return self.get(self.l1 + 8 * i, 8) & OFF_MASK

    def l2e(self, j, i=0):  # file offset of L2 entry j of the table L1[i] points to
        t = self.l2(i)
        assert t, "L1[%d] is unallocated" % i
        return t + 8 * j

    def refblock(self, i=0):
        return self.get(self.rt + 8 * i, 8) & OFF_MASK

    def set_refcount(self, cluster, value):
        bits = 1 << self.refcount_order
        per_block = self.cs * 8 // bits
        rb = self.refblock(cluster // per_block)
        idx = cluster % per_block
        if bits >= 8:
            self.put(rb + idx * bits // 8, value, bits // 8)
        else:  # sub-byte widths: LSB first within each byte (QEMU's get_refcount_ro0..2)
            off, shift = rb + idx * bits // 8, (idx * bits) % 8
            byte = self.get(off, 1) & ~(((1 << bits) - 1) << shift)
            self.put(off, byte | (value << shift), 1)

    def extensions(self):
        """(type, offset of the data, length) of each header extension."""
        off, out = self.header_length, []
        while off + 8 <= self.cs:
            t, n = self.get(off, 4), self.get(off + 4, 4)
            if t == 0:
                break
            out.append((t, off + 8, n))
            off += 8 + (n + 7) // 8 * 8
        return out

    def extension(self, t):
        for e in self.extensions():
            if e[0] == t:
                return e
        raise KeyError(hex(t))

    def size(self):
        self.f.seek(0, 2)
        return self.f.tell()

    def close(self):
        self.f.close()


BASES = {}


def base(kind):
    """A pristine image of each kind, made once in a scratch folder."""
    if kind in BASES:
        return BASES[kind]
    d = tempfile.mkdtemp(prefix="corpus-base-")
    p = os.path.join(d, kind + ".qcow2")
    opts = {"plain": "cluster_size=4k", "v2": "cluster_size=4k,compat=0.10",
            "zstd": "cluster_size=4k,compression_type=zstd", "rc1": "cluster_size=4k,refcount_bits=1",
            "rc64": "cluster_size=4k,refcount_bits=64", "extl2": "cluster_size=16k,extended_l2=on",
            "snap": "cluster_size=4k", "bitmap": "cluster_size=4k", "comp": "cluster_size=4k",
            "lazy": "cluster_size=4k,lazy_refcounts=on"}[kind]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, p, "1M"], check=True)
    io = ["write -P 0x11 0 8k", "write -P 0x22 64k 4k", "write -P 0x33 512k 4k"]
    if kind in ("comp", "zstd"):
        io += ["write -c -P 0x44 128k 4k", "write -c -P 0x45 132k 4k"]
    if kind == "extl2":
        io = ["write -P 0x11 0 8k", "write -P 0x22 64k 4k", "write -z 128k 4k"]
    args = ["qemu-io", "-f", "qcow2"]
    for c in io:
        args += ["-c", c]
    subprocess.run(args + [p], check=True, stdout=subprocess.DEVNULL)
    if kind == "snap":
        subprocess.run(["qemu-img", "snapshot", "-c", "s1", p], check=True)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x55 0 4k", p], check=True,
                       stdout=subprocess.DEVNULL)
        im = Image(p)  # a fixed date and VM clock, so regenerating gives the same bytes
        im.put(im.snapshots + 16, 0, 16)  # date_sec, date_nsec, vm_clock_nsec
        im.close()
    if kind == "bitmap":
        subprocess.run(["qemu-img", "bitmap", "--add", p, "b0"], check=True)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x66 256k 64k", p], check=True,
                       stdout=subprocess.DEVNULL)
    BASES[kind] = p
    return p


def make(name, kind, edit):
    """Copies base(kind) to OUT/name.qcow2 and applies edit(Image)."""
    p = os.path.join(OUT, name + ".qcow2")
    shutil.copyfile(base(kind), p)
    im = Image(p)
    edit(im)
    im.close()


def trunc(size):
    return lambda im: im.f.truncate(size(im) if callable(size) else size)


CORPUS = []


def image(name, kind="plain"):
    def deco(fn):
        CORPUS.append((name, kind, fn))
        return fn
    return deco


# --- Header (iotests 080: "huge" and misplaced tables, bad fields) ------------------------------
image("header-bad-magic")(lambda im: im.put(0, 0x51464900, 4))
image("header-version-1")(lambda im: im.put(4, 1, 4))
image("header-version-4")(lambda im: im.put(4, 4, 4))
image("header-cluster-bits-8")(lambda im: im.put(20, 8, 4))
image("header-cluster-bits-22")(lambda im: im.put(20, 22, 4))
image("header-cluster-bits-63")(lambda im: im.put(20, 63, 4))
image("header-size-2p63")(lambda im: im.put(24, 1 << 63, 8))
image("header-size-past-l1")(lambda im: im.put(24, 1 << 40, 8))
image("header-crypt-aes")(lambda im: im.put(32, 1, 4))
image("header-crypt-unknown")(lambda im: im.put(32, 7, 4))
image("l1-size-huge")(lambda im: im.put(36, 0x7FFFFFFF, 4))
image("l1-size-over-32m")(lambda im: im.put(36, 32 * 1024 * 1024 // 8 + 1, 4))
image("l1-size-past-eof")(lambda im: im.put(36, 0x100000, 4))
image("l1-size-zero")(lambda im: im.put(36, 0, 4))
image("l1-offset-unaligned")(lambda im: im.put(40, im.l1 + 8, 8))
image("l1-offset-past-eof")(lambda im: im.put(40, 1 << 40, 8))
image("l1-offset-in-header")(lambda im: im.put(40, 0, 8))
image("l1-overlaps-refcount-table")(lambda im: im.put(40, im.rt, 8))
image("refcount-table-unaligned")(lambda im: im.put(48, im.rt + 8, 8))
image("refcount-table-past-eof")(lambda im: im.put(48, 1 << 40, 8))
image("refcount-table-in-header")(lambda im: im.put(48, 0, 8))
image("refcount-table-clusters-huge")(lambda im: im.put(56, 0xFFFFFFFF, 4))
image("refcount-table-clusters-zero")(lambda im: im.put(56, 0, 4))
image("refcount-order-7")(lambda im: im.put(96, 7, 4))
image("incompatible-unknown-bit")(lambda im: im.put(72, 1 << 40, 8))
image("incompatible-corrupt-bit")(lambda im: im.put(72, 2, 8))
image("incompatible-dirty-bit")(lambda im: im.put(72, 1, 8))
image("incompatible-external-data")(lambda im: im.put(72, 4, 8))
image("header-length-short")(lambda im: im.put(100, 72, 4))
image("header-length-past-cluster")(lambda im: im.put(100, 8192, 4))
image("backing-name-past-cluster")(lambda im: (im.put(8, 4000, 8), im.put(16, 200, 4)))
image("backing-name-too-long")(lambda im: (im.put(8, 512, 8), im.put(16, 2000, 4)))
image("extension-length-overflow")(lambda im: (im.put(im.header_length, 0x12345678, 4),
                                               im.put(im.header_length + 4, 0xFFFFFFF0, 4)))
image("file-truncated-in-header")(trunc(64))
image("file-truncated-after-header")(trunc(lambda im: im.cs))
image("file-truncated-in-l2")(trunc(lambda im: im.l2() + 100))

# --- L1 / L2 entries (iotests 060: metadata overlaps; reserved bits) -----------------------------
image("l1-entry-unaligned")(lambda im: im.put(im.l1, im.get(im.l1, 8) + 0x200, 8))
image("l1-entry-past-eof")(lambda im: im.put(im.l1, COPIED | 1 << 40, 8))
image("l1-entry-copied-offset-zero")(lambda im: im.put(im.l1, COPIED, 8))
image("l1-entry-into-refcount-table")(lambda im: im.put(im.l1, COPIED | im.rt, 8))
image("l1-entry-into-l1")(lambda im: im.put(im.l1, COPIED | im.l1, 8))
image("l1-entry-reserved-bits")(lambda im: im.put(im.l1, im.get(im.l1, 8) | 0x2, 8))
image("l1-entries-share-l2")(lambda im: im.put(im.l1 + 8, im.get(im.l1, 8), 8))
image("l2-entry-into-header")(lambda im: im.put(im.l2e(0), COPIED | 0, 8))
image("l2-entry-into-l1")(lambda im: im.put(im.l2e(0), COPIED | im.l1, 8))
image("l2-entry-into-refcount-block")(lambda im: im.put(im.l2e(0), COPIED | im.refblock(), 8))
image("l2-entry-into-own-table")(lambda im: im.put(im.l2e(0), COPIED | im.l2(), 8))
image("l2-entry-past-eof")(lambda im: im.put(im.l2e(0), COPIED | 1 << 40, 8))
image("l2-entry-unaligned")(lambda im: im.put(im.l2e(0), im.get(im.l2e(0), 8) + 0x200, 8))
image("l2-entry-reserved-bits")(lambda im: im.put(im.l2e(0), im.get(im.l2e(0), 8) | 0x2, 8))
image("l2-entries-share-cluster")(lambda im: im.put(im.l2e(1), im.get(im.l2e(0), 8), 8))
image("l2-copied-flag-missing")(lambda im: im.put(im.l2e(0), im.get(im.l2e(0), 8) & ~COPIED, 8))
image("l2-zero-flag-unaligned")(lambda im: im.put(im.l2e(0), im.get(im.l2e(0), 8) + 0x201, 8))
image("l2-zero-flag-v2", "v2")(lambda im: im.put(im.l2e(0), im.get(im.l2e(0), 8) | 1, 8))
image("l2-entry-past-eof-v2", "v2")(lambda im: im.put(im.l2e(16), COPIED | 1 << 40, 8))
image("l2-entry-into-header-lazy", "lazy")(lambda im: im.put(im.l2e(0), COPIED | 0, 8))


# --- Compressed clusters -------------------------------------------------------------------------
def compressed(im, j=32):
    """Offset and value of the L2 entry of the first compressed cluster (guest 128 KiB)."""
    e = im.l2e(j)
    v = im.get(e, 8)
    assert v & COMPRESSED, hex(v)
    return e, v


def comp_past_eof(im):
    e, v = compressed(im)
    x = 62 - (im.cluster_bits - 8)  # spec: bits 0..x-1 host offset, x..61 sector count - 1
    im.put(e, COMPRESSED | (v & ~((1 << x) - 1) & ((1 << 62) - 1)) | (im.size() + 0x10000), 8)


def comp_huge_sectors(im):
    e, v = compressed(im)
    x = 62 - (im.cluster_bits - 8)
    im.put(e, v | ((1 << 62) - 1) & ~((1 << x) - 1), 8)


def comp_garbage(im):
    e, v = compressed(im)
    x = 62 - (im.cluster_bits - 8)
    im.put_bytes(v & ((1 << x) - 1), b"\xff" * 64)


def comp_offset_in_header(im):
    e, v = compressed(im)
    x = 62 - (im.cluster_bits - 8)
    im.put(e, v & ~((1 << x) - 1) | 0x100, 8)


def comp_copied(im):
    e, v = compressed(im)
    im.put(e, v | COPIED, 8)


image("compressed-past-eof", "comp")(comp_past_eof)
image("compressed-huge-sector-count", "comp")(comp_huge_sectors)
image("compressed-garbage-deflate", "comp")(comp_garbage)
image("compressed-garbage-zstd", "zstd")(comp_garbage)
image("compressed-into-header", "comp")(comp_offset_in_header)
image("compressed-copied-flag", "comp")(comp_copied)
image("compressed-refcount-zero", "comp")(
    lambda im: im.set_refcount((compressed(im)[1] & ((1 << 58) - 1)) >> im.cluster_bits, 0))


# --- Refcounts (iotests 060: refcount zero for used clusters; 080: refcount table entries) -------
def data_cluster(im):
    return (im.get(im.l2e(0), 8) & OFF_MASK) >> im.cluster_bits


image("refcount-zero-data")(lambda im: im.set_refcount(data_cluster(im), 0))
image("refcount-zero-l2")(lambda im: im.set_refcount(im.l2() >> im.cluster_bits, 0))
image("refcount-zero-l1")(lambda im: im.set_refcount(im.l1 >> im.cluster_bits, 0))
image("refcount-zero-refblock")(lambda im: im.set_refcount(im.refblock() >> im.cluster_bits, 0))
image("refcount-zero-header")(lambda im: im.set_refcount(0, 0))
image("refcount-two-data")(lambda im: im.set_refcount(data_cluster(im), 2))
image("refcount-leak")(lambda im: (im.f.truncate(im.size() + 2 * im.cs),
                                   im.set_refcount(im.size() // im.cs - 1, 1)))
image("refcount-zero-data-rc1", "rc1")(lambda im: im.set_refcount(data_cluster(im), 0))
image("refcount-leak-rc64", "rc64")(lambda im: (im.f.truncate(im.size() + im.cs),
                                                im.set_refcount(im.size() // im.cs - 1, 7)))
image("reftable-entry-unaligned")(lambda im: im.put(im.rt, im.get(im.rt, 8) + 0x200, 8))
image("reftable-entry-past-eof")(lambda im: im.put(im.rt, 1 << 40, 8))
image("reftable-entry-zero")(lambda im: im.put(im.rt, 0, 8))
image("reftable-entry-reserved-bits")(lambda im: im.put(im.rt, im.get(im.rt, 8) | 0x1, 8))
image("reftable-entry-into-l1")(lambda im: im.put(im.rt, im.l1, 8))
image("refblock-all-ones")(lambda im: im.put_bytes(im.refblock(), b"\xff" * im.cs))


# --- Snapshot table (iotests 080: bad and truncated tables) --------------------------------------
def snap_l1(im):  # the first snapshot's L1 offset and size fields
    return im.snapshots, im.snapshots + 8


image("snapshot-count-huge", "snap")(lambda im: im.put(60, 0xFFFFFFFF, 4))
image("snapshot-count-one-more", "snap")(lambda im: im.put(60, im.nb_snapshots + 1, 4))
image("snapshot-table-past-eof", "snap")(lambda im: im.put(64, 1 << 40, 8))
image("snapshot-table-unaligned", "snap")(lambda im: im.put(64, im.snapshots + 8, 8))
image("snapshot-table-in-header", "snap")(lambda im: im.put(64, 0, 8))
image("snapshot-table-truncated", "snap")(trunc(lambda im: im.snapshots + 20))
image("snapshot-l1-past-eof", "snap")(lambda im: im.put(im.snapshots, 1 << 40, 8))
image("snapshot-l1-unaligned", "snap")(lambda im: im.put(im.snapshots, im.get(im.snapshots, 8) + 8, 8))
image("snapshot-l1-size-huge", "snap")(lambda im: im.put(im.snapshots + 8, 0x7FFFFFFF, 4))
image("snapshot-id-size-huge", "snap")(lambda im: im.put(im.snapshots + 12, 0xFFFF, 2))
image("snapshot-extra-size-huge", "snap")(lambda im: im.put(im.snapshots + 36, 0xFFFFFFFF, 4))
image("snapshot-l1-entry-into-l1", "snap")(
    lambda im: im.put(im.get(im.snapshots, 8), im.l1, 8))


# --- Bitmaps (the bitmaps extension 0x23852875, spec "Bitmaps extension") ------------------------
BITMAPS = 0x23852875


def bm_field(im, off, v, n):
    _, data, _ = im.extension(BITMAPS)
    im.put(data + off, v, n)


image("bitmap-directory-past-eof", "bitmap")(lambda im: bm_field(im, 16, 1 << 40, 8))
image("bitmap-directory-size-huge", "bitmap")(lambda im: bm_field(im, 8, 1 << 40, 8))
image("bitmap-directory-unaligned", "bitmap")(
    lambda im: bm_field(im, 16, im.get(im.extension(BITMAPS)[1] + 16, 8) + 8, 8))
image("bitmap-count-zero", "bitmap")(lambda im: bm_field(im, 0, 0, 4))
image("bitmap-count-huge", "bitmap")(lambda im: bm_field(im, 0, 0xFFFFFFFF, 4))
image("bitmap-autoclear-cleared", "bitmap")(lambda im: im.put(88, 0, 8))


# --- Extended L2 (spec "Extended L2 Entries": allocation and zero bits of a subcluster) -----------
image("extl2-alloc-and-zero", "extl2")(lambda im: im.put(im.l2e(0) + 8, 0x00000001_00000001, 8))
image("extl2-unallocated-with-bits", "extl2")(lambda im: im.put(im.l2e(20) + 8, 0xFFFFFFFF, 8))


# --- Backing chains: a loop, a self-reference, a missing file ------------------------------------
def chains():
    q = lambda *a: subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u"] + list(a),
                                  check=True, cwd=OUT)
    q("-o", "cluster_size=4k", "backing-loop-b.qcow2", "1M")
    q("-b", "backing-loop-b.qcow2", "-F", "qcow2", "-o", "cluster_size=4k",
      "backing-loop-a.qcow2", "1M")
    q("-b", "backing-loop-a.qcow2", "-F", "qcow2", "-o", "cluster_size=4k",
      "backing-loop-b.qcow2", "1M")
    q("-b", "./backing-self.qcow2", "-F", "qcow2", "-o", "cluster_size=4k", "backing-self.qcow2", "1M")
    q("-b", "backing-missing-file.qcow2", "-F", "qcow2", "-o", "cluster_size=4k",
      "backing-missing.qcow2", "1M")


def main():
    if os.path.isdir(OUT):
        for f in os.listdir(OUT):
            if f.endswith(".qcow2"):
                os.remove(os.path.join(OUT, f))
    os.makedirs(OUT, exist_ok=True)
    for name, kind, fn in CORPUS:
        make(name, kind, fn)
    chains()
    for p in BASES.values():
        shutil.rmtree(os.path.dirname(p))
    print("make-corpus: %d images in %s" % (len(os.listdir(OUT)), OUT))


main()
