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

#include "virtio/net/net_request.h"
#include "virtio/net/net_spec.h"
#include "virtio/virtio_spec.h"
#include "virtio_fuzz_rig.h"

namespace {
constexpr size_t kMem = 128 * 1024;
namespace vn = vmm::virtio::net;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto rig = vmm::fuzz::VirtioFuzzRig::make(data, size, kMem);
  if (!rig) return 0;
  using vmm::virtio::feature;
  uint64_t features = 0;
  for (unsigned b : {vn::kFCsum, vn::kFHostTso4, vn::kFHostTso6, vn::kFHostEcn, vn::kFHostUfo}) {
    if (data[2] & (1u << (b % 8))) features |= feature(b);
  }
  // The packet scattered into receive buffers: header + frame of an input-chosen size.
  uint32_t pkt_len = vn::hdr::kSize + vn::kMinFrame + (uint32_t{data[3]} << 6);
  std::vector<uint8_t> pkt(pkt_len, 0xa5);

  rig->for_each_chain([&](const vmm::virtio::DescriptorChain& chain) -> uint32_t {
    auto tx = vn::parse_tx(chain, features);
    if (tx) {
      uint64_t n = 0, sum = 0;
      for (auto s : tx->frame) {
        for (uint8_t b : s) sum += b;  // reads every byte handed out
        n += s.size();
      }
      if (n != tx->frame_len || n > vn::kMaxFrame || n < vn::kMinFrame) __builtin_trap();
      if (sum == 0xffffffffffffffffull) std::abort();  // keeps the reads
    }
    auto rx = vn::parse_rx(chain);
    if (!rx) return 0;
    if (rx->total < vn::hdr::kSize || rx->total > vn::kMaxPacket) __builtin_trap();
    uint32_t len = std::min(pkt_len, rx->total);
    const vmm::virtio::Buffers* bufs[1] = {&*rx};
    uint32_t u[1];
    vn::scatter_packet(std::span(pkt.data(), len), bufs, u);
    if (u[0] != len) __builtin_trap();
    return u[0];
  });
  return 0;
}
