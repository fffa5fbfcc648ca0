// libFuzzer target: a hostile guest's virtio-console queues. The input becomes guest memory
// holding a split virtqueue; every available chain is parsed both as a transmit request
// (device-readable buffers, copied out the way the device writes them to the host) and as a
// receive request (device-writable buffers, filled the way host input fills them). Nothing may
// crash, hang or touch memory outside the guest's (AddressSanitizer), and neither side may hand
// out more than the cap.
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
  cfg.size = uint16_t(1u << (data[0] % 9));
  cfg.desc = 0x100000;
  cfg.avail = 0x100000 + 0x1000;
  cfg.used = 0x100000 + 0x2000;
  auto q = vmm::virtio::Virtqueue::create(gm, cfg, data[1] & 1, data[1] & 2);
  if (!q) return 0;
  uint32_t cap = 1 + (uint32_t{data[2]} << 8 | data[3]);
  std::vector<uint8_t> out;
  std::vector<uint8_t> input(cap, 0x42);

  for (int i = 0; i < 512; ++i) {
    auto head = q->pop_avail();
    if (!head || !*head) break;
    auto chain = q->read_chain(**head);
    uint32_t used = 0;
    if (chain) {
      using vmm::virtio::BufferDirection;
      auto tx = vmm::virtio::collect_buffers(*chain, BufferDirection::kDeviceReads, cap);
      if (tx) {
        if (tx->total > cap) std::abort();
        out.clear();
        for (auto s : tx->spans) out.insert(out.end(), s.begin(), s.end());
      }
      auto rx = vmm::virtio::collect_buffers(*chain, BufferDirection::kDeviceWrites, cap);
      if (rx) {
        if (rx->total > cap) std::abort();
        used = vmm::virtio::copy_into(*rx, input);
        if (used != rx->total) std::abort();
      }
    }
    q->add_used(**head, used);
  }
  q->publish_used();
  return 0;
}
