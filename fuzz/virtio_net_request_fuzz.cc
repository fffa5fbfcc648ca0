// libFuzzer target: a hostile guest's virtqueue and virtio-net requests (virtio 1.2 §5.1.6). The
// input becomes guest memory holding a split virtqueue and whatever its descriptors point at;
// every available chain is read and parsed both as a transmit request (parse_tx, under the
// feature set the input picks) and as a receive buffer (parse_rx), and a packet is scattered into
// it (scatter_packet). Nothing may crash, hang or touch memory outside guest memory: every frame
// byte the parser hands out is read and every receive span written (AddressSanitizer sees an
// escape), and the lengths must add up and respect the caps.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kvm/guest_memory.h"
#include "virtio/net/net_request.h"
#include "virtio/net/net_spec.h"
#include "virtio/queue.h"
#include "virtio/virtio_spec.h"

namespace {
constexpr size_t kMem = 128 * 1024;
namespace vn = vmm::virtio::net;
}  // namespace

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
  using vmm::virtio::feature;
  uint64_t features = 0;
  for (unsigned b : {vn::kFCsum, vn::kFHostTso4, vn::kFHostTso6, vn::kFHostEcn, vn::kFHostUfo}) {
    if (data[2] & (1u << (b % 8))) features |= feature(b);
  }
  // The packet scattered into receive buffers: header + frame of an input-chosen size.
  uint32_t pkt_len = vn::hdr::kSize + vn::kMinFrame + (uint32_t{data[3]} << 6);
  std::vector<uint8_t> pkt(pkt_len, 0xa5);

  for (int i = 0; i < 512; ++i) {
    auto head = q->pop_avail();
    if (!head || !*head) break;
    auto chain = q->read_chain(**head);
    uint32_t used = 0;
    if (chain) {
      auto tx = vn::parse_tx(*chain, features);
      if (tx) {
        uint64_t n = 0, sum = 0;
        for (auto s : tx->frame) {
          for (uint8_t b : s) sum += b;  // reads every byte handed out
          n += s.size();
        }
        if (n != tx->frame_len || n > vn::kMaxFrame || n < vn::kMinFrame) __builtin_trap();
        if (sum == 0xffffffffffffffffull) std::abort();  // keeps the reads
      }
      auto rx = vn::parse_rx(*chain);
      if (rx) {
        if (rx->total < vn::hdr::kSize || rx->total > vn::kMaxPacket) __builtin_trap();
        uint32_t len = std::min(pkt_len, rx->total);
        const vmm::virtio::Buffers* bufs[1] = {&*rx};
        uint32_t u[1];
        vn::scatter_packet(std::span(pkt.data(), len), bufs, u);
        if (u[0] != len) __builtin_trap();
        used = u[0];
      }
    }
    q->add_used(**head, used);
  }
  q->publish_used();
  return 0;
}
