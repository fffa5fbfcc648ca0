#include "virtio/buffers.h"

#include <algorithm>
#include <cstring>

namespace vmm::virtio {

std::expected<Buffers, std::string> collect_buffers(const DescriptorChain& chain,
                                                    BufferDirection dir, uint32_t cap) {
  bool want_writable = dir == BufferDirection::kDeviceWrites;
  Buffers b;
  for (const Descriptor& d : chain.descs) {
    if (d.device_writable != want_writable) {
      return std::unexpected(want_writable ? "device-readable descriptor in a buffer the device "
                                             "fills"
                                           : "device-writable descriptor in a buffer the device "
                                             "reads");
    }
    if (d.len == 0) continue;
    uint32_t room = cap - b.total;
    if (room == 0) {
      b.truncated = true;
      continue;  // keep checking directions: the whole chain must be well-formed
    }
    uint32_t n = std::min(d.len, room);
    if (n < d.len) b.truncated = true;
    b.spans.emplace_back(d.host, n);
    b.total += n;
  }
  if (b.total == 0) return std::unexpected("chain holds no bytes");
  return b;
}

uint32_t copy_into(const Buffers& b, std::span<const uint8_t> src) {
  uint32_t done = 0;
  for (std::span<uint8_t> s : b.spans) {
    if (done == src.size()) break;
    size_t n = std::min(s.size(), src.size() - done);
    std::memcpy(s.data(), src.data() + done, n);
    done += static_cast<uint32_t>(n);
  }
  return done;
}

}  // namespace vmm::virtio
