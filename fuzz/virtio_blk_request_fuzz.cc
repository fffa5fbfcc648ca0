// libFuzzer target: a hostile guest's virtqueue and virtio-blk requests. The input becomes guest
// memory holding a split virtqueue (descriptor table, avail ring, used ring) and whatever the
// descriptors point at; the device pops every available chain, parses it as a virtio-blk request
// and completes it. Nothing may crash, hang, or touch memory outside the guest's: every iovec the
// parser hands out is written to in full, so AddressSanitizer sees any escape.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "virtio/blk/request.h"
#include "virtio_fuzz_rig.h"

namespace {
constexpr size_t kMem = 64 * 1024;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto rig = vmm::fuzz::VirtioFuzzRig::make(data, size, kMem);
  if (!rig) return 0;

  vmm::virtio::blk::Limits lim;
  lim.capacity_sectors = 1 + data[2] * 1000ull;
  lim.seg_max = 126;
  lim.size_max = 1u << 20;
  lim.max_discard_sectors = lim.max_write_zeroes_sectors = 1u << 16;
  lim.max_discard_seg = lim.max_write_zeroes_seg = 8;
  lim.read_only = data[3] & 1;
  lim.discard = data[3] & 2;
  lim.write_zeroes = data[3] & 4;

  rig->for_each_chain([&](const vmm::virtio::DescriptorChain& chain) -> uint32_t {
    auto req = vmm::virtio::blk::parse_request(chain, lim);
    if (!req) {
      if (req.error().status) *req.error().status = req.error().code;
      return 0;
    }
    for (const iovec& v : req->iov) std::memset(v.iov_base, 0xa5, v.iov_len);
    *req->status = 0;
    return vmm::virtio::blk::used_length(*req);
  });
  return 0;
}
