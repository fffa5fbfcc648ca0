/* A minimal virtio-pci modern driver core for the test guest (virtio 1.2: 4.1.4 capabilities,
 * 3.1.1 initialization, 2.7 split virtqueues), polled: no interrupts, no hlt. One device at a
 * time; each queue lives in caller-provided static storage. */
#pragma once

#include "guest.h"

#define VQ_SIZE 8
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2

struct vq_desc {
  u64 addr;
  u32 len;
  u16 flags;
  u16 next;
};

struct vq {
  struct vq_desc desc[VQ_SIZE] __attribute__((aligned(16)));
  struct {
    u16 flags, idx, ring[VQ_SIZE], used_event;
  } avail __attribute__((aligned(2)));
  struct {
    u16 flags, idx;
    struct {
      u32 id, len;
    } ring[VQ_SIZE];
    u16 avail_event;
  } used __attribute__((aligned(4)));
  u16 last_used;
  u64 notify;
  u16 index;
};

struct vdev {
  u32 bdf;
  u64 common, notify_base, device_cfg;
  u32 notify_mult;
  u64 features;
};

/* Finds virtio device type `type` (5: device id 0x1040 + type) on bus 0. */
int vpci_find(u16 type, struct vdev* d);
/* Maps the capabilities, resets, negotiates VERSION_1 | (offered & want), sets FEATURES_OK. */
const char* vpci_init(struct vdev* d, u64 want);
const char* vpci_queue(struct vdev* d, u16 index, struct vq* q);
void vpci_driver_ok(struct vdev* d);
/* Makes a one-descriptor chain (device-writable or not) available and notifies. */
void vq_post(struct vq* q, u16 slot, void* buf, u32 len, int device_writes);
/* Waits for the next used element; 0 on timeout (about `seconds` seconds of TSC at ~3 GHz). */
int vq_wait_used(struct vq* q, u32* len, u64 seconds);
