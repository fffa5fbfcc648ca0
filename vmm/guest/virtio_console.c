/* virtio-console (virtio 1.2 5.3), port 0: reads cols/rows (F_SIZE), says hello on the transmit
 * queue, waits for a line from the host on the receive queue and sends it back. */
#include "virtio_pci.h"

static struct vq rxq __attribute__((aligned(4096)));
static struct vq txq __attribute__((aligned(4096)));
static char rxbuf[128];
static char txbuf[256];

static unsigned str_len(const char* s) {
  unsigned n = 0;
  while (s[n]) ++n;
  return n;
}

static const char* send(const char* s, unsigned n) {
  memcpy(txbuf, s, n);
  vq_post(&txq, 0, txbuf, n, 0);
  u32 len;
  if (!vq_wait_used(&txq, &len, 10)) return "console: transmit timeout";
  return 0;
}

const char* virtio_console_test(int* found) {
  struct vdev d;
  *found = vpci_find(3, &d);
  if (!*found) return "no virtio-console device on PCI bus 0";
  const char* e = vpci_init(&d, 1ul << 0 /* F_SIZE */);
  if (e) return e;
  if ((e = vpci_queue(&d, 0, &rxq)) || (e = vpci_queue(&d, 1, &txq))) return e;
  vpci_driver_ok(&d);
  if ((d.features & 1) && d.device_cfg) {
    puts("GUEST: console ");
    putdec(mmio16(d.device_cfg));
    puts("x");
    putdec(mmio16(d.device_cfg + 2));
    puts("\n");
  }
  vq_post(&rxq, 0, rxbuf, sizeof rxbuf - 1, 1);
  const char* hello = "GUEST-CONSOLE: hello host\n";
  if ((e = send(hello, str_len(hello)))) return e;
  /* The host answers one line; it may arrive in pieces. */
  unsigned have = 0;
  while (have == 0 || rxbuf[have - 1] != '\n') {
    u32 len = 0;
    if (!vq_wait_used(&rxq, &len, 30)) return "console: no answer from the host";
    if (len == 0) return "console: host input ended";
    have += len;
    if (have >= sizeof rxbuf - 1) return "console: answer too long";
    if (rxbuf[have - 1] != '\n') vq_post(&rxq, 0, rxbuf + have, sizeof rxbuf - 1 - have, 1);
  }
  rxbuf[have - 1] = 0;
  puts("GUEST: console got '");
  puts(rxbuf);
  puts("'\n");
  unsigned n = 0;
  const char* pre = "GUEST-CONSOLE: got ";
  memcpy(txbuf, pre, str_len(pre));
  n = str_len(pre);
  memcpy(txbuf + n, rxbuf, have - 1);
  n += have - 1;
  txbuf[n++] = '\n';
  vq_post(&txq, 1, txbuf, n, 0);
  u32 len;
  if (!vq_wait_used(&txq, &len, 10)) return "console: transmit timeout";
  return 0;
}
