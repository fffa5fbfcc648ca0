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

#include "virtio/buffers.h"
#include "virtio_fuzz_rig.h"

namespace {
constexpr size_t kMem = 64 * 1024;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto rig = vmm::fuzz::VirtioFuzzRig::make(data, size, kMem);
  if (!rig) return 0;
  uint32_t cap = 1 + (uint32_t{data[2]} << 8 | data[3]);
  std::vector<uint8_t> out;
  std::vector<uint8_t> input(cap, 0x42);

  rig->for_each_chain([&](const vmm::virtio::DescriptorChain& chain) -> uint32_t {
    using vmm::virtio::BufferDirection;
    auto tx = vmm::virtio::collect_buffers(chain, BufferDirection::kDeviceReads, cap);
    if (tx) {
      if (tx->total > cap) std::abort();
      out.clear();
      for (auto s : tx->spans) out.insert(out.end(), s.begin(), s.end());
    }
    auto rx = vmm::virtio::collect_buffers(chain, BufferDirection::kDeviceWrites, cap);
    if (!rx) return 0;
    if (rx->total > cap) std::abort();
    uint32_t used = vmm::virtio::copy_into(*rx, input);
    if (used != rx->total) std::abort();
    return used;
  });
  return 0;
}
