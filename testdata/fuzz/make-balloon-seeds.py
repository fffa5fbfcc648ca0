#!/usr/bin/env python3
"""Seeds for fuzz/virtio_balloon_request_fuzz.cc: guest memory holding a split virtqueue (virtio
1.2 2.7) with virtio-balloon inflate/deflate PFN arrays and a stats buffer (5.5.6). Layout as
fuzz/virtio_fuzz_rig.h maps it: 4 control bytes (queue size log2, ring flags, two unused), then
memory at guest address 0x100000 with the descriptor table at +0, the avail ring at +0x1000,
buffers from +0x4000.
  testdata/fuzz/make-balloon-seeds.py   (writes testdata/fuzz/virtio_balloon_request/seed-*)"""
import os
import struct

BASE = 0x100000
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "virtio_balloon_request")
NEXT, WRITE, INDIRECT = 1, 2, 4


def seed(name, ctrl, chains, extra=()):
    """chains: lists of (offset, bytes_or_len, flags), placed in consecutive descriptor slots."""
    mem = bytearray(0x8000)
    slot = 0
    heads = []
    for chain in chains:
        heads.append(slot)
        for i, (off, data, flags) in enumerate(chain):
            ln = data if isinstance(data, int) else len(data)
            if not isinstance(data, int):
                mem[off:off + ln] = data
            last = i + 1 == len(chain)
            struct.pack_into("<QIHH", mem, 16 * slot, BASE + off, ln,
                             flags | (0 if last else NEXT), 0 if last else slot + 1)
            slot += 1
    for off, data in extra:
        mem[off:off + len(data)] = data
    struct.pack_into("<HH", mem, 0x1000, 0, len(heads))
    for i, h in enumerate(heads):
        struct.pack_into("<H", mem, 0x1004 + 2 * i, h)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "seed-" + name), "wb") as f:
        f.write(bytes(ctrl) + bytes(mem))


def pfns(*p):
    return struct.pack("<%dI" % len(p), *p)


# What Linux's virtio_balloon sends: up to 256 PFNs a chain, one descriptor.
seed("inflate-linux", [4, 0, 0, 0], [[(0x4000, pfns(*range(0x100, 0x200)), 0)]])
# Runs and strays: consecutive PFNs, one outside RAM, one at the top of the 32-bit range.
seed("inflate-mixed", [4, 1, 0, 0], [[(0x4000, pfns(0x100, 0x101, 0x102, 0xfffff, 0xffffffff), 0)],
                                     [(0x4100, pfns(7), 0), (0x4200, pfns(8, 9), 0)]])
# Refused: a length not a multiple of 4, a device-writable descriptor, more than 4096 PFNs.
seed("refused", [4, 0, 0, 0], [[(0x4000, 6, 0)], [(0x4100, pfns(1), WRITE)],
                               [(0x4000, 4096 * 4 + 4, 0)]])
# A stats buffer: (le16 tag, le64 value) entries (5.5.6.3).
stats = b"".join(struct.pack("<HQ", t, v) for t, v in [(0, 1), (4, 1 << 30), (5, 2 << 30), (6, 3)])
seed("stats", [2, 0, 0, 0], [[(0x4000, stats, 0)]])
# An indirect table at +0x6000 holding two PFN buffers.
table = struct.pack("<QIHH", BASE + 0x4000, 8, NEXT, 1) + struct.pack("<QIHH", BASE + 0x4100, 4, 0, 0)
seed("inflate-indirect", [4, 2, 0, 0], [[(0x6000, table, INDIRECT)]],
     extra=[(0x4000, pfns(0x10, 0x11)), (0x4100, pfns(0x12))])
