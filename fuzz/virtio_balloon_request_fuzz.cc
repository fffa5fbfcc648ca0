// libFuzzer target: a hostile guest's virtio-balloon inflate/deflate queues (virtio 1.2 §5.5.6).
// The input becomes guest memory holding a split virtqueue (virtio_fuzz_rig.h); every available
// chain is parsed as a PFN array (parse_pfns) and as a stats buffer (device-readable, 64 entries
// at most, §5.5.6.3). Nothing may crash, hang or read outside guest memory (AddressSanitizer);
// an accepted array holds at most kMaxPfnsPerChain PFNs, exactly the le32 words the chain's
// device-readable buffers carry, and a refused one is a message, not an exception. Accepted
// PFNs then go through HostPages (the --hugepages bookkeeping) as inflates and deflates, the
// chain's first PFN choosing which: a 2 MiB page completes only when all 512 of its pages are in,
// checked against a plain set of the pages.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "virtio/balloon/balloon_device.h"
#include "virtio/balloon/host_pages.h"
#include "virtio/buffers.h"
#include "virtio_fuzz_rig.h"

namespace {
constexpr size_t kMem = 64 * 1024;
namespace vb = vmm::virtio::balloon;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto rig = vmm::fuzz::VirtioFuzzRig::make(data, size, kMem);
  if (!rig) return 0;
  constexpr uint64_t k2M = 2 << 20;
  vb::HostPages huge;
  std::map<uint64_t, std::set<uint64_t>> model;  // host page -> its ballooned 4 KiB pages
  rig->for_each_chain([&](const vmm::virtio::DescriptorChain& chain) -> uint32_t {
    using vmm::virtio::BufferDirection;
    auto pfns = vb::parse_pfns(chain);
    if (pfns) {
      if (pfns->size() > vb::kMaxPfnsPerChain) __builtin_trap();
      // The same chain read again gives the bytes the PFNs came from (nothing else writes
      // guest memory here).
      auto b = vmm::virtio::collect_buffers(chain, BufferDirection::kDeviceReads,
                                            vb::kMaxPfnsPerChain * 4);
      if (!b || b->total != pfns->size() * 4) __builtin_trap();
      std::vector<uint8_t> bytes;
      for (auto s : b->spans) bytes.insert(bytes.end(), s.begin(), s.end());
      if (!bytes.empty() && std::memcmp(bytes.data(), pfns->data(), bytes.size()) != 0) {
        __builtin_trap();
      }
      const bool inflate = pfns->empty() || (*pfns)[0] % 2 == 0;
      for (uint32_t pfn : *pfns) {
        const uint64_t gpa = uint64_t{pfn} * vb::kPageSize;
        std::set<uint64_t>& in = model[gpa & ~(k2M - 1)];
        if (inflate) {
          const bool fresh = in.insert(gpa).second;
          if (huge.inflate(gpa, k2M) != (fresh && in.size() == k2M / vb::kPageSize)) {
            __builtin_trap();
          }
        } else {
          in.erase(gpa);
          huge.deflate(gpa, k2M);
        }
      }
      uint64_t partial = 0;
      for (const auto& [base, in] : model) partial += !in.empty() && in.size() < k2M / vb::kPageSize;
      if (huge.partial() != partial) __builtin_trap();
    } else if (pfns.error().empty()) {
      __builtin_trap();  // a refusal says why
    }
    auto stats = vmm::virtio::collect_buffers(chain, BufferDirection::kDeviceReads,
                                              64 * vb::kStatEntrySize);
    if (stats && stats->total > 64 * vb::kStatEntrySize) __builtin_trap();
    return 0;  // both queues complete with used length 0 (§5.5.6)
  });
  return 0;
}
