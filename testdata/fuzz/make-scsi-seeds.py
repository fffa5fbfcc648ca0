#!/usr/bin/env python3
"""Seeds for fuzz/virtio_scsi_request_fuzz.cc: guest memory holding a split virtqueue (virtio 1.2
2.7) with virtio-scsi command chains (5.6.6.1). Layout as the target maps it: 4 control bytes
(queue size log2, ring flags, capacity/1000, LUN flags), then memory at guest address 0x100000
with the descriptor table at +0, the avail ring at +0x1000, buffers from +0x4000.
  testdata/fuzz/make-scsi-seeds.py   (writes testdata/fuzz/virtio_scsi_request/seed-*)"""
import os
import struct

BASE = 0x100000
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "virtio_scsi_request")
NEXT, WRITE = 1, 2
LUN0 = bytes([1, 0, 0x40, 0, 0, 0, 0, 0])


def req(cdb, lun=LUN0, cdb_size=32):
    return lun + struct.pack("<QBBB", 7, 0, 0, 0) + cdb.ljust(cdb_size, b"\0")


def rw16(op, lba, n):
    return bytes([op, 0]) + struct.pack(">QI", lba, n) + b"\0\0"


def seed(name, ctrl, chains):
    """chains: lists of (offset, bytes_or_len, writable)."""
    mem = bytearray(0x8000)
    slot = 0
    heads = []
    for chain in chains:
        heads.append(slot)
        for i, (off, data, w) in enumerate(chain):
            ln = data if isinstance(data, int) else len(data)
            if not isinstance(data, int):
                mem[off:off + ln] = data
            last = i + 1 == len(chain)
            struct.pack_into("<QIHH", mem, 16 * slot, BASE + off, ln,
                             (WRITE if w else 0) | (0 if last else NEXT), 0 if last else slot + 1)
            slot += 1
    struct.pack_into("<HH", mem, 0x1000, 0, len(heads))
    for i, h in enumerate(heads):
        struct.pack_into("<H", mem, 0x1004 + 2 * i, h)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "seed-" + name), "wb") as f:
        f.write(bytes(ctrl) + bytes(mem))


def cmd(cdb, data_in=0, data_out=b"", lun=LUN0):
    c = [(0x4000, req(cdb, lun), False)]
    if data_out:
        c.append((0x5000, data_out, False))
    c.append((0x6000, 108, True))
    if data_in:
        c.append((0x6100, data_in, True))
    return c


ctrl = [4, 1, 10, 6]
seed("inquiry", ctrl, [cmd(bytes([0x12, 0, 0, 0, 96, 0]), 96),
                       cmd(bytes([0x12, 1, 0xb0, 0, 64, 0]), 64),
                       cmd(bytes([0x12, 1, 0x83, 0, 255, 0]), 255)])
seed("capacity", ctrl, [cmd(bytes([0x25] + [0] * 9), 8),
                        cmd(bytes([0x9e, 0x10] + [0] * 10 + [0, 32, 0, 0]), 32),
                        cmd(bytes([0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]), 256)])
seed("rw", ctrl, [cmd(rw16(0x8a, 8, 2), 0, b"\x11" * 1024), cmd(rw16(0x88, 8, 2), 1024),
                  cmd(bytes([0x08, 0, 0, 1, 0, 0]), 4096), cmd(rw16(0x88, 2**64 - 1, 2), 1024)])
seed("mode", ctrl, [cmd(bytes([0x1a, 0, 0x3f, 0, 255, 0]), 255),
                    cmd(bytes([0x5a, 8, 0x08, 0, 0, 0, 0, 0, 255, 0]), 255)])
unmap = struct.pack(">HH4x", 22, 16) + struct.pack(">QI4x", 16, 128)
seed("unmap", ctrl, [cmd(bytes([0x42, 0, 0, 0, 0, 0, 0, 0, len(unmap), 0]), 0, unmap),
                     cmd(bytes([0x93, 8]) + struct.pack(">QI", 0, 64) + b"\0\0", 0, b"\0" * 512)])
seed("hostile", ctrl, [[(0x4000, 10, False), (0x6000, 108, True)],
                       cmd(rw16(0x88, 0, 255), 512),
                       cmd(bytes([0x12, 0, 0, 0, 36, 0]), 36, lun=bytes([1, 3, 0x40, 9, 0, 0, 0, 0]))])
