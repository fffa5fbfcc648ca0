/* virtio-blk over the modern virtio-pci transport (virtio 1.2: 4.1.4 PCI capabilities,
 * 3.1.1 driver initialization, 2.7 split virtqueues, 5.2 block device), driven by polling the
 * used ring: no interrupts, no hlt. The host test wrote 0x5a over the first 1 MiB beforehand
 * and checks our writes afterwards: every 8-byte word we write at disk byte offset o holds
 * PATTERN | o. */
#include "guest.h"

#define PATTERN 0xa5a5000000000000ul
#define SECTOR 512ul
#define QSIZE 8

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define F_FLUSH 9
#define F_DISCARD 13
#define F_WRITE_ZEROES 14
#define F_VERSION_1 32

/* Common configuration structure offsets (4.1.4.3). */
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

struct desc {
  u64 addr;
  u32 len;
  u16 flags;
  u16 next;
};
#define DESC_NEXT 1
#define DESC_WRITE 2

static struct desc descs[QSIZE] __attribute__((aligned(4096)));
static struct {
  u16 flags, idx, ring[QSIZE], used_event;
} avail __attribute__((aligned(4096)));
static struct {
  u16 flags, idx;
  struct {
    u32 id, len;
  } ring[QSIZE];
  u16 avail_event;
} used __attribute__((aligned(4096)));
static struct {
  u32 type, reserved;
  u64 sector;
} req_hdr;
static struct {
  u64 sector;
  u32 num_sectors, flags;
} range;
static volatile u8 status;
static u8 buf[256 * 1024] __attribute__((aligned(4096)));

static u64 common, notify_addr, device_cfg;
static u32 notify_mult;
static u64 features;
static u16 last_used;

static u64 bar_address(u32 bdf, u32 bar) {
  u32 off = 0x10 + 4 * bar;
  u32 lo = pci_read32(bdf, off);
  if (lo & 1) return 0; /* I/O BAR: not for virtio modern structures */
  u64 base = lo & ~0xful;
  int is64 = ((lo >> 1) & 3) == 2;
  if (is64) base |= (u64)pci_read32(bdf, off + 4) << 32;
  if (base == 0) {
    /* Unassigned: size it and place it in the 32-bit PCI hole. */
    pci_write32(bdf, off, 0xffffffffu);
    u32 mask = pci_read32(bdf, off) & ~0xfu;
    u64 size = (u64)(~mask) + 1;
    base = 0xe0000000ul;
    if (size > 0x10000000ul) return 0;
    pci_write32(bdf, off, (u32)base);
    if (is64) pci_write32(bdf, off + 4, 0);
  }
  return base;
}

static int find_device(u32* bdf_out) {
  for (u32 dev = 0; dev < 32; ++dev) {
    u32 bdf = dev << 3;
    u32 id = pci_read32(bdf, 0);
    if ((id & 0xffff) != 0x1af4) continue;
    u32 did = id >> 16;
    if (did == 0x1042 || did == 0x1001) {
      *bdf_out = bdf;
      return 1;
    }
  }
  return 0;
}

static const char* map_caps(u32 bdf) {
  if (!(pci_read16(bdf, 6) & 0x10)) return "no PCI capability list";
  for (u32 p = pci_read8(bdf, 0x34) & 0xfc, n = 0; p && n < 48; p = pci_read8(bdf, p + 1) & 0xfc, ++n) {
    if (pci_read8(bdf, p) != 0x09) continue;
    u8 type = pci_read8(bdf, p + 3);
    u32 bar = pci_read8(bdf, p + 4);
    u32 off = pci_read32(bdf, p + 8);
    u64 base = bar < 6 ? bar_address(bdf, bar) : 0;
    if (!base) continue;
    if (type == 1) common = base + off;
    if (type == 2) {
      notify_mult = pci_read32(bdf, p + 16);
      notify_addr = base + off;
    }
    if (type == 4) device_cfg = base + off;
  }
  if (!common || !notify_addr || !device_cfg) return "virtio capabilities missing";
  /* Memory space + bus master. */
  pci_write32(bdf, 4, (pci_read32(bdf, 4) & 0xffff) | 0x6);
  return 0;
}

static const char* init_device(void) {
  u16 notify_off;
  mmio8(common + CC_STATUS) = 0; /* reset */
  while (mmio8(common + CC_STATUS) != 0) {
  }
  mmio8(common + CC_STATUS) = 1; /* ACKNOWLEDGE */
  mmio8(common + CC_STATUS) = 1 | 2; /* DRIVER */
  mmio32(common + CC_DFSELECT) = 0;
  u64 f = mmio32(common + CC_DF);
  mmio32(common + CC_DFSELECT) = 1;
  f |= (u64)mmio32(common + CC_DF) << 32;
  if (!(f & (1ul << F_VERSION_1))) return "device does not offer VERSION_1";
  features = f & ((1ul << F_VERSION_1) | (1ul << F_FLUSH) | (1ul << F_DISCARD) | (1ul << F_WRITE_ZEROES));
  mmio32(common + CC_GFSELECT) = 0;
  mmio32(common + CC_GF) = (u32)features;
  mmio32(common + CC_GFSELECT) = 1;
  mmio32(common + CC_GF) = (u32)(features >> 32);
  mmio8(common + CC_STATUS) = 1 | 2 | 8; /* FEATURES_OK */
  if (!(mmio8(common + CC_STATUS) & 8)) return "device refused FEATURES_OK";
  mmio16(common + CC_QSELECT) = 0;
  u16 max = mmio16(common + CC_QSIZE);
  if (max == 0) return "queue 0 unavailable";
  if (max > QSIZE) mmio16(common + CC_QSIZE) = QSIZE;
  else if (max < QSIZE) return "queue too small";
  mmio32(common + CC_QDESC) = (u32)(u64)descs;
  mmio32(common + CC_QDESC + 4) = 0;
  mmio32(common + CC_QDRIVER) = (u32)(u64)&avail;
  mmio32(common + CC_QDRIVER + 4) = 0;
  mmio32(common + CC_QDEVICE) = (u32)(u64)&used;
  mmio32(common + CC_QDEVICE + 4) = 0;
  notify_off = mmio16(common + CC_QNOTIFYOFF);
  notify_addr += (u64)notify_off * notify_mult;
  mmio16(common + CC_QENABLE) = 1;
  mmio8(common + CC_STATUS) = 1 | 2 | 8 | 4; /* DRIVER_OK */
  return 0;
}

/* Submits one request (header, optional data, status) and polls for its completion. */
static const char* submit(u32 type, u64 sector, void* data, u32 len, int device_writes) {
  req_hdr.type = type;
  req_hdr.reserved = 0;
  req_hdr.sector = sector;
  status = 0xff;
  int n = 0;
  descs[n] = (struct desc){(u64)&req_hdr, sizeof req_hdr, DESC_NEXT, 1};
  ++n;
  if (len) {
    descs[n] = (struct desc){(u64)data, len, (u16)(DESC_NEXT | (device_writes ? DESC_WRITE : 0)), 2};
    ++n;
  }
  descs[n] = (struct desc){(u64)&status, 1, DESC_WRITE, 0};
  barrier();
  avail.ring[avail.idx % QSIZE] = 0;
  barrier();
  avail.idx++;
  barrier();
  mmio16(notify_addr) = 0;
  u64 start = rdtsc();
  while (*(volatile u16*)&used.idx == last_used) {
    if (rdtsc() - start > 30000000000ul) return "timeout waiting for the used ring";
  }
  barrier();
  last_used++;
  if (status != 0) return "request failed (status != OK)";
  return 0;
}

static void fill(u64 disk_off, u64 len) {
  u64* w = (u64*)buf;
  for (u64 i = 0; i < len / 8; ++i) w[i] = PATTERN | (disk_off + 8 * i);
}

static int check_pattern(const u8* p, u64 disk_off, u64 len) {
  const u64* w = (const u64*)p;
  for (u64 i = 0; i < len / 8; ++i)
    if (w[i] != (PATTERN | (disk_off + 8 * i))) return 0;
  return 1;
}

static int check_byte(const u8* p, u8 b, u64 len) {
  const u64* w = (const u64*)p;
  u64 want = 0x0101010101010101ul * b;
  for (u64 i = 0; i < len / 8; ++i)
    if (w[i] != want) return 0;
  return 1;
}

#define TRY(x)                  \
  do {                          \
    const char* e_ = (x);       \
    if (e_) return e_;          \
  } while (0)
#define CHECK(c, msg) \
  do {                \
    if (!(c)) return msg; \
  } while (0)

static const char* write_pattern(u64 off, u64 len) {
  fill(off, len);
  return submit(VIRTIO_BLK_T_OUT, off / SECTOR, buf, (u32)len, 0);
}

static const char* read_to_buf(u64 off, u64 len) { return submit(VIRTIO_BLK_T_IN, off / SECTOR, buf, (u32)len, 1); }

const char* virtio_blk_test(int* found) {
  u32 bdf;
  *found = find_device(&bdf);
  if (!*found) return "no virtio-blk device on PCI bus 0";
  puts("GUEST: virtio-blk at 00:");
  putdec(bdf >> 3);
  puts("\n");
  TRY(map_caps(bdf));
  TRY(init_device());
  u64 capacity = mmio32(device_cfg) | ((u64)mmio32(device_cfg + 4) << 32);
  puts("GUEST: capacity ");
  putdec(capacity);
  puts(" sectors, features ");
  puthex(features);
  puts("\n");
  CHECK(capacity >= (16ul << 20) / SECTOR, "disk smaller than 16 MiB");

  memset(buf, 0, 20);
  TRY(submit(VIRTIO_BLK_T_GET_ID, 0, buf, 20, 1));
  buf[20] = 0;
  puts("GUEST: id '");
  puts((const char*)buf);
  puts("'\n");

  /* The host's pattern: 0x5a over [0, 1 MiB). */
  TRY(read_to_buf(0, 64 * 1024));
  CHECK(check_byte(buf, 0x5a, 64 * 1024), "host pattern 0x5a not found at 0");
  TRY(read_to_buf((1ul << 20) - 4096, 8192));
  CHECK(check_byte(buf, 0x5a, 4096) && check_byte(buf + 4096, 0, 4096), "pattern edge at 1 MiB wrong");

  /* Writes: across the 64 KiB and 128 KiB cluster boundaries, a 1.5 KiB write across the
   * 1 MiB boundary, and a partial write into a fresh cluster. */
  TRY(write_pattern(60 * 1024, 96 * 1024));
  TRY(write_pattern((1ul << 20) - 512, 1536));
  TRY(write_pattern((2ul << 20) + 512, 4096));
  if (features & (1ul << F_FLUSH)) TRY(submit(VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0));
  TRY(read_to_buf(59 * 1024, 98 * 1024));
  CHECK(check_byte(buf, 0x5a, 1024) && check_pattern(buf + 1024, 60 * 1024, 96 * 1024) &&
            check_byte(buf + 97 * 1024, 0x5a, 1024),
        "read-back across cluster boundaries differs");
  TRY(read_to_buf((1ul << 20) - 1024, 3072));
  CHECK(check_byte(buf, 0x5a, 512) && check_pattern(buf + 512, (1ul << 20) - 512, 1536) &&
            check_byte(buf + 2048, 0, 1024),
        "read-back across 1 MiB differs");
  TRY(read_to_buf(2ul << 20, 8192));
  CHECK(check_byte(buf, 0, 512) && check_pattern(buf + 512, (2ul << 20) + 512, 4096) &&
            check_byte(buf + 4608, 0, 8192 - 4608),
        "read-back of the partial cluster differs");

  if (features & (1ul << F_WRITE_ZEROES)) {
    TRY(write_pattern(3ul << 20, 72 * 1024));
    range.sector = ((3ul << 20) + 8192) / SECTOR;
    range.num_sectors = 64;
    range.flags = 0;
    TRY(submit(VIRTIO_BLK_T_WRITE_ZEROES, 0, &range, sizeof range, 0));
    TRY(read_to_buf(3ul << 20, 72 * 1024));
    CHECK(check_pattern(buf, 3ul << 20, 8192) && check_byte(buf + 8192, 0, 32768) &&
              check_pattern(buf + 40960, (3ul << 20) + 40960, 72 * 1024 - 40960),
          "write-zeroes read-back differs");
    puts("GUEST: write-zeroes ok\n");
  }
  if (features & (1ul << F_DISCARD)) {
    TRY(write_pattern(4ul << 20, 128 * 1024));
    range.sector = (4ul << 20) / SECTOR;
    range.num_sectors = 256;
    range.flags = 0;
    TRY(submit(VIRTIO_BLK_T_DISCARD, 0, &range, sizeof range, 0));
    puts("GUEST: discard ok\n");
  }
  if (features & (1ul << F_FLUSH)) TRY(submit(VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0));
  return 0;
}

void virtio_blk_read_until_error(void) {
  puts("GUEST: blk reading until a request fails\n");
  for (u64 n = 0;; ++n) {
    const char* err = read_to_buf(0, 4096);
    if (!err) continue;
    puts("GUEST: blk read failed after ");
    putdec(n);
    puts(" reads: ");
    puts(err);
    puts(", status ");
    putdec(status);
    puts("\n");
    return;
  }
}
