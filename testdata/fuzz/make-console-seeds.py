#!/usr/bin/env python3
"""Seeds for fuzz/virtio_console_control_fuzz.cc: the virtio-console multiport control
conversation (virtio 1.2 5.3.6.2) as the fuzz target reads it: a configuration byte, then
records (0: a driver message, length-prefixed; 1: host end connected; 2: resize; 3: reset).
  testdata/fuzz/make-console-seeds.py   (writes testdata/fuzz/virtio_console_control/seed-*)"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "virtio_console_control")
BAD_ID = 0xffffffff
DEVICE_READY, PORT_ADD, PORT_REMOVE, PORT_READY, CONSOLE_PORT, RESIZE, PORT_OPEN, PORT_NAME = range(8)


def drv(port, event, value, extra=b""):
    m = struct.pack("<IHH", port, event, value) + extra
    return bytes([0, len(m)]) + m


def host(port, connected):
    return bytes([1, port, 1 if connected else 0])


def resize(cols, rows):
    return bytes([2]) + struct.pack("<HH", cols, rows)


RESET = bytes([3])
LINUX = drv(BAD_ID, DEVICE_READY, 1) + b"".join(drv(p, PORT_READY, 1) for p in range(3))

SEEDS = {
    # Console plus two named ports (config 1 | 2 << 1): Linux's whole handshake, a port opened
    # and closed, the host end going away and coming back, a resize.
    "linux-handshake": bytes([1 | 2 << 1]) + LINUX + drv(1, PORT_OPEN, 1) + drv(1, PORT_OPEN, 0),
    "host-changes": bytes([1 | 2 << 1]) + LINUX + host(2, False) + resize(132, 43) + host(2, True),
    "reset-midway": bytes([1 | 1 << 1]) + drv(BAD_ID, DEVICE_READY, 1) + drv(0, PORT_READY, 1)
    + RESET + drv(1, PORT_OPEN, 1) + LINUX,
    # Named ports only: no port 0.
    "no-console": bytes([3 << 1]) + LINUX + drv(3, PORT_OPEN, 1),
    # Hostile: short messages, unknown ports, device-only events, failures reported.
    "hostile": bytes([1 | 3 << 1]) + bytes([0, 4]) + b"\x00\x00\x00\x00"
    + drv(7, PORT_READY, 1) + drv(BAD_ID, PORT_OPEN, 1) + drv(1, PORT_NAME, 1, b"evil")
    + drv(0, RESIZE, 0, b"\x01\x00\x01\x00") + drv(1, PORT_ADD, 1) + drv(0, 0xffff, 0)
    + drv(BAD_ID, DEVICE_READY, 0) + drv(1, PORT_READY, 0),
}

os.makedirs(OUT, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(OUT, "seed-" + name), "wb") as f:
        f.write(data)
