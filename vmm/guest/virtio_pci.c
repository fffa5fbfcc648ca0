/* See virtio_pci.h. */
#include "virtio_pci.h"

#define CC_DFSELECT 0
#define CC_DF 4
#define CC_GFSELECT 8
#define CC_GF 12
#define CC_STATUS 20
#define CC_QSELECT 22
#define CC_QSIZE 24
#define CC_QENABLE 28
#define CC_QNOTIFYOFF 30
#define CC_QDESC 32
#define CC_QDRIVER 40
#define CC_QDEVICE 48

static u64 next_bar = 0xe8000000ul; /* for BARs the VMM left unassigned */

static u64 bar_address(u32 bdf, u32 bar) {
  u32 off = 0x10 + 4 * bar;
  u32 lo = pci_read32(bdf, off);
  if (lo & 1) return 0;
  u64 base = lo & ~0xful;
  int is64 = ((lo >> 1) & 3) == 2;
  if (is64) base |= (u64)pci_read32(bdf, off + 4) << 32;
  if (base == 0) {
    pci_write32(bdf, off, 0xffffffffu);
    u32 mask = pci_read32(bdf, off) & ~0xfu;
    u64 size = (u64)(~mask) + 1;
    if (size > 0x1000000ul) return 0;
    base = (next_bar + size - 1) & ~(size - 1);
    next_bar = base + size;
    pci_write32(bdf, off, (u32)base);
    if (is64) pci_write32(bdf, off + 4, 0);
  }
  return base;
}

int vpci_find(u16 type, struct vdev* d) {
  for (u32 dev = 0; dev < 32; ++dev) {
    u32 id = pci_read32(dev << 3, 0);
    if ((id & 0xffff) == 0x1af4 && (id >> 16) == 0x1040u + type) {
      memset(d, 0, sizeof *d);
      d->bdf = dev << 3;
      return 1;
    }
  }
  return 0;
}

const char* vpci_init(struct vdev* d, u64 want) {
  u32 bdf = d->bdf;
  if (!(pci_read16(bdf, 6) & 0x10)) return "no PCI capability list";
  for (u32 p = pci_read8(bdf, 0x34) & 0xfc, n = 0; p && n < 48; p = pci_read8(bdf, p + 1) & 0xfc, ++n) {
    if (pci_read8(bdf, p) != 0x09) continue;
    u8 type = pci_read8(bdf, p + 3);
    u32 bar = pci_read8(bdf, p + 4);
    u32 off = pci_read32(bdf, p + 8);
    u64 base = bar < 6 ? bar_address(bdf, bar) : 0;
    if (!base) continue;
    if (type == 1) d->common = base + off;
    if (type == 2) {
      d->notify_mult = pci_read32(bdf, p + 16);
      d->notify_base = base + off;
    }
    if (type == 4) d->device_cfg = base + off;
  }
  /* 4.1.4.6: a device without configuration (virtio-rng) has no device capability. */
  if (!d->common || !d->notify_base) return "virtio capabilities missing";
  pci_write32(bdf, 4, (pci_read32(bdf, 4) & 0xffff) | 0x6); /* memory space + bus master */
  u64 c = d->common;
  mmio8(c + CC_STATUS) = 0;
  while (mmio8(c + CC_STATUS) != 0) {
  }
  mmio8(c + CC_STATUS) = 1;
  mmio8(c + CC_STATUS) = 1 | 2;
  mmio32(c + CC_DFSELECT) = 0;
  u64 f = mmio32(c + CC_DF);
  mmio32(c + CC_DFSELECT) = 1;
  f |= (u64)mmio32(c + CC_DF) << 32;
  if (!(f & (1ul << 32))) return "device does not offer VERSION_1";
  d->features = f & (want | (1ul << 32));
  mmio32(c + CC_GFSELECT) = 0;
  mmio32(c + CC_GF) = (u32)d->features;
  mmio32(c + CC_GFSELECT) = 1;
  mmio32(c + CC_GF) = (u32)(d->features >> 32);
  mmio8(c + CC_STATUS) = 1 | 2 | 8;
  if (!(mmio8(c + CC_STATUS) & 8)) return "device refused FEATURES_OK";
  return 0;
}

const char* vpci_queue(struct vdev* d, u16 index, struct vq* q) {
  u64 c = d->common;
  memset(q, 0, sizeof *q);
  q->index = index;
  mmio16(c + CC_QSELECT) = index;
  u16 max = mmio16(c + CC_QSIZE);
  if (max < VQ_SIZE) return "queue missing or too small";
  mmio16(c + CC_QSIZE) = VQ_SIZE;
  mmio32(c + CC_QDESC) = (u32)(u64)q->desc;
  mmio32(c + CC_QDESC + 4) = 0;
  mmio32(c + CC_QDRIVER) = (u32)(u64)&q->avail;
  mmio32(c + CC_QDRIVER + 4) = 0;
  mmio32(c + CC_QDEVICE) = (u32)(u64)&q->used;
  mmio32(c + CC_QDEVICE + 4) = 0;
  q->notify = d->notify_base + (u64)mmio16(c + CC_QNOTIFYOFF) * d->notify_mult;
  mmio16(c + CC_QENABLE) = 1;
  return 0;
}

void vpci_driver_ok(struct vdev* d) { mmio8(d->common + CC_STATUS) = 1 | 2 | 8 | 4; }

void vq_post(struct vq* q, u16 slot, void* buf, u32 len, int device_writes) {
  q->desc[slot] = (struct vq_desc){(u64)buf, len, (u16)(device_writes ? VIRTQ_DESC_F_WRITE : 0), 0};
  barrier();
  q->avail.ring[q->avail.idx % VQ_SIZE] = slot;
  barrier();
  *(volatile u16*)&q->avail.idx = (u16)(q->avail.idx + 1);
  barrier();
  mmio16(q->notify) = q->index;
}

int vq_wait_used(struct vq* q, u32* len, u64 seconds) {
  u64 start = rdtsc();
  while (*(volatile u16*)&q->used.idx == q->last_used) {
    if (rdtsc() - start > seconds * 3000000000ul) return 0;
  }
  barrier();
  if (len) *len = q->used.ring[q->last_used % VQ_SIZE].len;
  q->last_used++;
  return 1;
}
