// libFuzzer target: a hostile guest's virtqueue and virtio-rng requests. The input becomes guest
// memory holding a split virtqueue and whatever its descriptors point at; every available chain
// is read, parsed as an entropy request (collect_buffers: device-writable only, capped) and
// filled. Nothing may crash, hang or write outside guest memory: every span the parser hands out
// is written in full, so AddressSanitizer sees any escape, and the total must respect the cap.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kvm/guest_memory.h"
#include "virtio/buffers.h"
#include "virtio/queue.h"

namespace {
constexpr size_t kMem = 64 * 1024;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  std::vector<uint8_t> mem(kMem, 0);
  std::memcpy(mem.data(), data + 4, std::min(size - 4, kMem));
  vmm::GuestMemory gm;
  gm.add_region(0x100000, kMem, mem.data());

  vmm::virtio::QueueConfig cfg;
  cfg.size = uint16_t(1u << (data[0] % 9));  // 1..256
  cfg.desc = 0x100000;
  cfg.avail = 0x100000 + 0x1000;
  cfg.used = 0x100000 + 0x2000;
  auto q = vmm::virtio::Virtqueue::create(gm, cfg, data[1] & 1, data[1] & 2);
  if (!q) return 0;
  uint32_t cap = 1 + (uint32_t{data[2]} << 8 | data[3]);

  for (int i = 0; i < 512; ++i) {
    auto head = q->pop_avail();
    if (!head || !*head) break;
    auto chain = q->read_chain(**head);
    uint32_t used = 0;
    if (chain) {
      auto b =
          vmm::virtio::collect_buffers(*chain, vmm::virtio::BufferDirection::kDeviceWrites, cap);
      if (b) {
        if (b->total > cap) std::abort();
        for (auto s : b->spans) std::memset(s.data(), 0x5a, s.size());
        used = b->total;
      }
    }
    q->add_used(**head, used);
  }
  q->publish_used();
  return 0;
}
