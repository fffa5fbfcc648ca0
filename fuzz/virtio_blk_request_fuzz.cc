// libFuzzer target: a hostile guest's virtqueue and virtio-blk requests. The input becomes guest
// memory holding a split virtqueue (descriptor table, avail ring, used ring) and whatever the
// descriptors point at; the device pops every available chain, parses it as a virtio-blk request
// and completes it. Nothing may crash, hang, or touch memory outside the guest's: every iovec the
// parser hands out is written to in full, so AddressSanitizer sees any escape.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kvm/guest_memory.h"
#include "virtio/blk/request.h"
#include "virtio/queue.h"

namespace {
constexpr size_t kMem = 64 * 1024;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  // Guest memory: exactly kMem bytes, so ASan flags any access past it.
  std::vector<uint8_t> mem(kMem, 0);
  std::memcpy(mem.data(), data + 4, std::min(size - 4, kMem));
  vmm::GuestMemory gm;
  gm.add_region(0x100000, kMem, mem.data());

  vmm::virtio::QueueConfig cfg;
  cfg.size = uint16_t(1u << (data[0] % 9));  // 1..256
  cfg.desc = 0x100000;
  cfg.avail = 0x100000 + 0x1000;
  cfg.used = 0x100000 + 0x2000;
  bool event_idx = data[1] & 1, indirect = data[1] & 2;
  auto q = vmm::virtio::Virtqueue::create(gm, cfg, event_idx, indirect);
  if (!q) return 0;

  vmm::virtio::blk::Limits lim;
  lim.capacity_sectors = 1 + data[2] * 1000ull;
  lim.seg_max = 126;
  lim.size_max = 1u << 20;
  lim.max_discard_sectors = lim.max_write_zeroes_sectors = 1u << 16;
  lim.max_discard_seg = lim.max_write_zeroes_seg = 8;
  lim.read_only = data[3] & 1;
  lim.discard = data[3] & 2;
  lim.write_zeroes = data[3] & 4;

  for (int i = 0; i < 512; ++i) {  // bounded: a queue yields at most size chains per index wrap
    auto head = q->pop_avail();
    if (!head || !*head) break;
    auto chain = q->read_chain(**head);
    if (!chain) {
      q->add_used(**head, 0);
      continue;
    }
    auto req = vmm::virtio::blk::parse_request(*chain, lim);
    uint32_t used = 0;
    if (req) {
      for (const iovec& v : req->iov) std::memset(v.iov_base, 0xa5, v.iov_len);
      *req->status = 0;
      used = vmm::virtio::blk::used_length(*req);
    } else if (req.error().status) {
      *req.error().status = req.error().code;
    }
    q->add_used(**head, used);
  }
  q->publish_used();
  return 0;
}
