/* virtio-rng (virtio 1.2 5.4): reads two 64-byte buffers of entropy and checks that they are
 * full, not constant and not equal. */
#include "virtio_pci.h"

static struct vq rq __attribute__((aligned(4096)));
static u8 a[64], b[64];

const char* virtio_rng_test(int* found) {
  struct vdev d;
  *found = vpci_find(4, &d);
  if (!*found) return "no virtio-rng device on PCI bus 0";
  const char* e = vpci_init(&d, 0);
  if (e) return e;
  if ((e = vpci_queue(&d, 0, &rq))) return e;
  vpci_driver_ok(&d);
  u32 len = 0;
  vq_post(&rq, 0, a, sizeof a, 1);
  if (!vq_wait_used(&rq, &len, 10)) return "rng: timeout";
  if (len != sizeof a) return "rng: short read";
  vq_post(&rq, 1, b, sizeof b, 1);
  if (!vq_wait_used(&rq, &len, 10)) return "rng: timeout";
  if (len != sizeof b) return "rng: short read";
  int same = 1, equal = 1;
  for (unsigned i = 0; i < sizeof a; ++i) {
    if (a[i] != a[0]) same = 0;
    if (a[i] != b[i]) equal = 0;
  }
  if (same) return "rng: constant bytes";
  if (equal) return "rng: two reads returned the same bytes";
  puts("GUEST: rng ok ");
  puthex(*(u64*)a);
  puts("\n");
  return 0;
}
