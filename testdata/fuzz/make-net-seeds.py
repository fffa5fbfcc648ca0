#!/usr/bin/env python3
"""Seeds for fuzz/virtio_net_request_fuzz.cc: guest memory holding a split virtqueue (virtio 1.2
2.7) with virtio-net chains (5.1.6). Layout as the target maps it: 4 control bytes (queue size
log2, ring flags, feature bits, packet size), then memory at guest address 0x100000 with the
descriptor table at +0, the avail ring at +0x1000, buffers from +0x4000.
  testdata/fuzz/make-net-seeds.py   (writes testdata/fuzz/virtio_net_request/seed-*)"""
import os
import struct

BASE = 0x100000
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "virtio_net_request")
NEXT, WRITE, INDIRECT = 1, 2, 4


def hdr(flags=0, gso=0, gso_size=0, cs=0, co=0):
    return struct.pack("<BBHHHHH", flags, gso, 0, gso_size, cs, co, 0)


def frame(n):
    return b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + bytes(i & 0xff for i in range(n - 14))


def seed(name, ctrl, chains, extra=()):
    """chains: list of lists of (offset, bytes_or_len, flags); placed in consecutive slots."""
    mem = bytearray(0x8000)
    slot = 0
    heads = []
    for chain in chains:
        heads.append(slot)
        for i, (off, data, flags) in enumerate(chain):
            ln = data if isinstance(data, int) else len(data)
            if not isinstance(data, int):
                mem[off:off + ln] = data
            nxt = slot + 1 if i + 1 < len(chain) else 0
            f = flags | (NEXT if i + 1 < len(chain) else 0)
            struct.pack_into("<QIHH", mem, 16 * slot, BASE + off, ln, f, nxt)
            slot += 1
    for off, data in extra:
        mem[off:off + len(data)] = data
    struct.pack_into("<HH", mem, 0x1000, 0, len(heads))
    for i, h in enumerate(heads):
        struct.pack_into("<H", mem, 0x1004 + 2 * i, h)
    with open(os.path.join(OUT, "seed-" + name), "wb") as f:
        f.write(bytes(ctrl) + bytes(mem))


os.makedirs(OUT, exist_ok=True)
h = hdr()
f = frame(200)
seed("tx-split", [4, 1, 0, 4], [[(0x4000, h[:8], 0), (0x4100, h[8:] + f[:50], 0), (0x4200, f[50:], 0)]])
seed("tx-tso", [4, 0, 0xff, 4], [[(0x4000, hdr(1, 1, 1448, 34, 16) + frame(1000), 0)]])
seed("tx-hostile", [4, 0, 0, 0], [[(0x4000, h, 0)], [(0x4800, hdr(2) + f, 0)],
                                   [(0x5000, h + f, 0), (0x5800, 64, WRITE)]])
seed("rx-merge", [4, 1, 0, 40], [[(0x4000, 1000, WRITE)], [(0x5000, 8, WRITE)],
                                  [(0x5400, 600, WRITE), (0x5800, 600, WRITE)]])
# An indirect table at +0x6000 with a header and a frame.
table = struct.pack("<QIHH", BASE + 0x4000, 12, NEXT, 1) + struct.pack("<QIHH", BASE + 0x4100, 200, 0, 0)
seed("tx-indirect", [4, 2, 0, 4], [[(0x6000, table, INDIRECT)]], extra=[(0x4000, h), (0x4100, f)])
