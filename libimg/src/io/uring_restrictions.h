// The io_uring rings of IoLoop, restricted to what IoLoop submits. Operations that go through
// io_uring are not seen by seccomp, so an unrestricted ring is a way around a thread's filter:
// IORING_REGISTER_RESTRICTIONS (Linux 5.10) on a ring set up disabled leaves it the opcodes
// read, write, readv, writev, fsync, fallocate, poll_add and nop, no SQE flags (no links, no
// async or fixed files) and no register calls; anything else completes with -EACCES.
#pragma once

#include <liburing.h>

namespace img {

// Sets up ring (as io_uring_queue_init) restricted as above and enabled; 0, or a negative errno
// and no ring (an older kernel refuses IORING_SETUP_R_DISABLED with -EINVAL).
int init_restricted_ring(unsigned entries, io_uring* ring);

}  // namespace img
