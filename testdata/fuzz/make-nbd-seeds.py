#!/usr/bin/env python3
"""Writes the seed inputs of fuzz/nbd_server_fuzz.cc into testdata/fuzz/nbd_server/.

Each seed is one settings byte (bit 0 read-only, 1 allocation depth, 2 discard=unmap, 3-4
detect-zeroes) and then what a client sends (NetworkBlockDevice/nbd doc/proto.md)."""
import os
import struct

OPT = 0x49484156454F5054
REQ = 0x25609513


def opt(o, data=b""):
    return struct.pack(">QII", OPT, o, len(data)) + data


def name_go(name=b"", infos=()):
    return struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos)) + b"".join(
        struct.pack(">H", i) for i in infos)


def meta(name, queries):
    d = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
    return d + b"".join(struct.pack(">I", len(q)) + q for q in queries)


def req(t, off, length, cookie=1, flags=0):
    return struct.pack(">IHHQQI", REQ, flags, t, cookie, off, length)


FLAGS = struct.pack(">I", 3)
requests = (req(0, 0, 4096, 1) + req(1, 8192, 512, 2) + b"\x00" * 512 + req(7, 0, 65536, 3) +
            req(4, 65536, 4096, 4) + req(6, 131072, 65536, 5, 2) + req(6, 0, 4096, 6, 16) +
            req(3, 0, 0, 7) + req(5, 0, 65536, 8) + req(0, 1000, 100, 9, 4) + req(2, 0, 0, 10))
seeds = {
    "structured_go": bytes([2 | 4]) + FLAGS + opt(8) +
    opt(10, meta(b"", [b"base:allocation", b"qemu:allocation-depth"])) +
    opt(7, name_go(b"", (1, 2, 3))) + requests,
    "export_name_simple": bytes([8]) + FLAGS + opt(1, b"") + requests,
    "haggling": bytes([2]) + FLAGS + opt(3) + opt(6, name_go()) + opt(9, meta(b"", [])) +
    opt(9, meta(b"", [b"qemu:", b"base:"])) + opt(5) + opt(77, b"xyz") + opt(2),
    "read_only_writes": bytes([1]) + FLAGS + opt(7, name_go()) + req(1, 0, 16) + b"\x01" * 16 +
    req(4, 0, 512) + req(0, 0, 512) + req(2, 0, 0),
    "hostile_lengths": bytes([0]) + FLAGS + opt(8) + opt(7, name_go()) +
    req(0, 0, 64 << 20) + req(0, (1 << 64) - 1, 16) + req(1, 0, 0xFFFFFFFF),
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nbd_server")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
