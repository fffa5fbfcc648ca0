#include "io/uring_restrictions.h"

#include <cstdint>
#include <cstring>

namespace img {

int init_restricted_ring(unsigned entries, io_uring* ring) {
  io_uring_params p{};
  p.flags = IORING_SETUP_R_DISABLED;
  int r = io_uring_queue_init_params(entries, ring, &p);
  if (r < 0) return r;
  static constexpr uint8_t kOps[] = {IORING_OP_NOP,       IORING_OP_READV,   IORING_OP_WRITEV,
                                     IORING_OP_FSYNC,     IORING_OP_READ,    IORING_OP_WRITE,
                                     IORING_OP_FALLOCATE, IORING_OP_POLL_ADD};
  io_uring_restriction res[sizeof kOps];
  std::memset(res, 0, sizeof res);
  for (size_t i = 0; i < sizeof kOps; ++i) {
    res[i].opcode = IORING_RESTRICTION_SQE_OP;
    res[i].sqe_op = kOps[i];
  }
  // The raw register call: Debian's liburing 2.3 declares io_uring_register_restrictions and
  // io_uring_enable_rings but does not export them.
  const unsigned fd = static_cast<unsigned>(ring->ring_fd);
  r = io_uring_register(fd, IORING_REGISTER_RESTRICTIONS, res, sizeof kOps);
  if (r == 0) r = io_uring_register(fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
  if (r < 0) io_uring_queue_exit(ring);
  return r;
}

}  // namespace img
