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

#include "virtio/buffers.h"
#include "virtio_fuzz_rig.h"

namespace {
constexpr size_t kMem = 64 * 1024;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto rig = vmm::fuzz::VirtioFuzzRig::make(data, size, kMem);
  if (!rig) return 0;
  uint32_t cap = 1 + (uint32_t{data[2]} << 8 | data[3]);

  rig->for_each_chain([&](const vmm::virtio::DescriptorChain& chain) -> uint32_t {
    auto b = vmm::virtio::collect_buffers(chain, vmm::virtio::BufferDirection::kDeviceWrites, cap);
    if (!b) return 0;
    if (b->total > cap) std::abort();
    for (auto s : b->spans) std::memset(s.data(), 0x5a, s.size());
    return b->total;
  });
  return 0;
}
