#include "virtio/net/net_request.h"

#include <algorithm>
#include <cstring>

#include "virtio/virtio_spec.h"

namespace vmm::virtio::net {
namespace {

uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }

bool has(uint64_t features, unsigned bit) { return features & feature(bit); }

// §5.1.6.2.1 Driver requirements on the header of a packet to transmit.
std::string check_header(const std::array<uint8_t, hdr::kSize>& h, uint32_t frame_len,
                         uint64_t features) {
  uint8_t flags = h[hdr::kFlags];
  if (flags & (kHdrFDataValid | kHdrFRscInfo)) return "DATA_VALID or RSC_INFO set on transmit";
  if (flags & ~kHdrFNeedsCsum) return "unknown header flags";
  if (flags & kHdrFNeedsCsum) {
    if (!has(features, kFCsum)) return "NEEDS_CSUM without VIRTIO_NET_F_CSUM";
    uint32_t start = le16(&h[hdr::kCsumStart]), off = le16(&h[hdr::kCsumOffset]);
    if (start + off + 2 > frame_len) return "checksum position outside the frame";
  }
  uint8_t gso = h[hdr::kGsoType];
  uint8_t type = gso & static_cast<uint8_t>(~kGsoEcn);
  if (type == kGsoNone) {
    if (gso & kGsoEcn) return "ECN bit without a GSO type";
    return "";
  }
  if (type == kGsoTcpv4 && !has(features, kFHostTso4)) return "TSOv4 without HOST_TSO4";
  if (type == kGsoTcpv6 && !has(features, kFHostTso6)) return "TSOv6 without HOST_TSO6";
  if (type == kGsoUdp && !has(features, kFHostUfo)) return "UFO without HOST_UFO";
  if (type != kGsoTcpv4 && type != kGsoTcpv6 && type != kGsoUdp) return "unknown GSO type";
  if ((gso & kGsoEcn) && !has(features, kFHostEcn)) return "ECN without HOST_ECN";
  if (le16(&h[hdr::kGsoSize]) == 0) return "GSO without a segment size";
  return "";
}

}  // namespace

std::expected<TxPacket, std::string> parse_tx(const DescriptorChain& chain, uint64_t features) {
  // One byte over the cap tells "too long" from "exactly the largest packet".
  auto b = collect_buffers(chain, BufferDirection::kDeviceReads, kMaxPacket + 1);
  if (!b) return std::unexpected(b.error());
  if (b->truncated || b->total > kMaxPacket) {
    return std::unexpected("transmit chain longer than a 64 KiB frame and its header");
  }
  if (b->total < hdr::kSize + kMinFrame) {
    return std::unexpected("transmit chain shorter than the header and an Ethernet header");
  }
  TxPacket p;
  uint32_t got = 0;
  for (std::span<uint8_t> s : b->spans) {
    size_t skip = 0;
    if (got < hdr::kSize) {
      skip = std::min<size_t>(s.size(), hdr::kSize - got);
      std::memcpy(p.header.data() + got, s.data(), skip);
      got += static_cast<uint32_t>(skip);
    }
    if (skip < s.size()) p.frame.emplace_back(s.data() + skip, s.size() - skip);
  }
  p.frame_len = b->total - hdr::kSize;
  std::string why = check_header(p.header, p.frame_len, features);
  if (!why.empty()) return std::unexpected(why);
  p.header[hdr::kNumBuffers] = p.header[hdr::kNumBuffers + 1] = 0;  // §5.1.6.2: unused on tx
  return p;
}

std::expected<Buffers, std::string> parse_rx(const DescriptorChain& chain) {
  auto b = collect_buffers(chain, BufferDirection::kDeviceWrites, kMaxPacket);
  if (!b) return std::unexpected(b.error());
  if (b->total < kMinRxBuffer) return std::unexpected("receive buffer shorter than the header");
  return b;
}

void scatter_packet(std::span<const uint8_t> packet, std::span<const Buffers* const> bufs,
                    std::span<uint32_t> used) {
  std::array<uint8_t, hdr::kSize> h;
  std::memcpy(h.data(), packet.data(), hdr::kSize);
  h[hdr::kNumBuffers] = static_cast<uint8_t>(bufs.size());
  h[hdr::kNumBuffers + 1] = static_cast<uint8_t>(bufs.size() >> 8);
  size_t at = 0;
  for (size_t i = 0; i < bufs.size(); ++i) {
    used[i] = 0;
    for (std::span<uint8_t> s : bufs[i]->spans) {
      size_t n = std::min(s.size(), packet.size() - at);
      // The header comes from the patched copy, the rest straight from the packet.
      for (size_t k = 0; k < n && at + k < hdr::kSize; ++k) s[k] = h[at + k];
      size_t from = at < hdr::kSize ? std::min(n, hdr::kSize - at) : 0;
      if (n > from) std::memcpy(s.data() + from, packet.data() + at + from, n - from);
      at += n;
      used[i] += static_cast<uint32_t>(n);
      if (at == packet.size()) break;
    }
  }
}

}  // namespace vmm::virtio::net
