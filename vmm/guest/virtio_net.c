/* virtio-net (virtio 1.2 5.1), one queue pair, no offloads, no MRG_RXBUF (so each frame lands in
 * one buffer with num_buffers = 1): reads the MAC from the configuration, posts receive buffers,
 * then sends one Ethernet frame of type 0x88b5 (IEEE local experimental) to the broadcast
 * address, about once a second until a frame of that type comes back (the host's listener may
 * start after the guest's first frame), and prints what the reply says. Frames of other types
 * (IPv6 router solicitations on the host side, say) are given back to the device unread. */
#include "virtio_pci.h"

#define NET_F_MAC (1ul << 5)
#define HDR 12
#define RXBUF 2048
#define NRX 4

static struct vq rxq __attribute__((aligned(4096)));
static struct vq txq __attribute__((aligned(4096)));
static u8 rxbuf[NRX][RXBUF];
static u8 txbuf[HDR + 64];

static const char kHello[] = "vmm-guest-hello";
static const char kReply[] = "vmm-host-";

static void hexbyte(u8 b) {
  char s[3] = {"0123456789abcdef"[b >> 4], "0123456789abcdef"[b & 15], 0};
  puts(s);
}

/* The next used element of q: its id and length; 0 if none came within `ms` ms (3 GHz TSC). */
static int take_used(struct vq* q, u32* id, u32* len, u64 ms) {
  u64 start = rdtsc();
  while (*(volatile u16*)&q->used.idx == q->last_used) {
    if (rdtsc() - start > ms * 3000000ul) return 0;
  }
  barrier();
  *id = q->used.ring[q->last_used % VQ_SIZE].id;
  *len = q->used.ring[q->last_used % VQ_SIZE].len;
  q->last_used++;
  return 1;
}

const char* virtio_net_test(int* found) {
  struct vdev d;
  *found = vpci_find(1, &d);
  if (!*found) return "no virtio-net device on PCI bus 0";
  const char* e = vpci_init(&d, NET_F_MAC);
  if (e) return e;
  if (!(d.features & NET_F_MAC) || !d.device_cfg) return "net: no MAC offered";
  if ((e = vpci_queue(&d, 0, &rxq)) || (e = vpci_queue(&d, 1, &txq))) return e;
  vpci_driver_ok(&d);
  u8 mac[6];
  puts("GUEST: net mac ");
  for (int i = 0; i < 6; ++i) {
    mac[i] = mmio8(d.device_cfg + i);
    hexbyte(mac[i]);
    if (i < 5) puts(":");
  }
  puts("\n");
  for (u16 i = 0; i < NRX; ++i) vq_post(&rxq, i, rxbuf[i], RXBUF, 1);

  u8* f = txbuf + HDR; /* the header stays zero: no offloads */
  memset(txbuf, 0, sizeof txbuf);
  memset(f, 0xff, 6);
  memcpy(f + 6, mac, 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  memcpy(f + 14, kHello, sizeof kHello);
  u32 flen = 14 + sizeof kHello;
  for (int round = 0; round < 60; ++round) {
    vq_post(&txq, 0, txbuf, HDR + flen, 0);
    u32 id, len;
    if (!take_used(&txq, &id, &len, 5000)) return "net: transmit timeout";
    /* Wait about a second for frames, then send again. */
    u64 start = rdtsc();
    while (rdtsc() - start < 3000000000ul) {
      if (!take_used(&rxq, &id, &len, 100)) continue;
      if (id >= NRX) return "net: bad used id on the receive queue";
      u8* r = rxbuf[id];
      u16 nbuf = (u16)(r[10] | r[11] << 8);
      int ours = len >= HDR + 14 + sizeof kReply && r[HDR + 12] == 0x88 && r[HDR + 13] == 0xb5;
      for (u32 k = 0; ours && k < sizeof kReply - 1; ++k) ours = r[HDR + 14 + k] == kReply[k];
      if (ours) {
        if (nbuf != 1) return "net: num_buffers is not 1 without MRG_RXBUF";
        for (int k = 0; k < 6; ++k)
          if (r[HDR + k] != mac[k]) return "net: reply not addressed to our MAC";
        char text[64];
        u32 n = 0;
        while (n < sizeof text - 1 && HDR + 14 + n < len && r[HDR + 14 + n] >= 0x20 &&
               r[HDR + 14 + n] < 0x7f) {
          text[n] = (char)r[HDR + 14 + n];
          ++n;
        }
        text[n] = 0;
        puts("GUEST: net got '");
        puts(text);
        puts("'\n");
        return 0;
      }
      vq_post(&rxq, (u16)id, rxbuf[id], RXBUF, 1); /* not ours: give it back */
    }
  }
  return "net: no reply from the host";
}
