// The virtio-net request layouts (virtio 1.2 §5.1.6), parsed before the device acts on them.
//
// Transmit (§5.1.6.2): a chain of device-readable buffers holding struct virtio_net_hdr and then
// the frame. parse_tx refuses a device-writable descriptor, a chain shorter than the header plus
// an Ethernet header or longer than kMaxPacket, and a header the driver may not send with the
// features it negotiated (§5.1.6.2.1: DATA_VALID or RSC_INFO set, NEEDS_CSUM without CSUM or
// with a checksum position outside the frame, a GSO type without its HOST_* feature or without
// a segment size). The header is copied out of guest memory first, so what is checked is what
// is sent (the guest may rewrite its buffers at any time); the frame stays in guest memory and
// goes to the tap with writev (no copy).
//
// Receive (§5.1.6.3): chains of device-writable buffers, each at least a header long.
// scatter_packet copies one packet (vnet header + frame, as the tap hands it) across one or
// more such buffers and sets num_buffers (§5.1.6.3.1: 1 without MRG_RXBUF).
//
// Thread-safety: pure functions.
#pragma once

#include <array>
#include <cstdint>
#include <expected>
#include <span>
#include <string>
#include <vector>

#include "virtio/buffers.h"
#include "virtio/net/net_spec.h"
#include "virtio/queue.h"

namespace vmm::virtio::net {

struct TxPacket {
  std::array<uint8_t, hdr::kSize> header{};     // validated copy
  std::vector<std::span<const uint8_t>> frame;  // guest memory, in order
  uint32_t frame_len = 0;
};

std::expected<TxPacket, std::string> parse_tx(const DescriptorChain& chain, uint64_t features);

std::expected<Buffers, std::string> parse_rx(const DescriptorChain& chain);

// Copies packet across bufs in order (the header at the start of bufs[0], with num_buffers set
// to bufs.size()); used[i] = bytes written into bufs[i]. REQUIRES: packet.size() >= hdr::kSize,
// bufs[0]->total >= hdr::kSize and the buffers' totals add up to at least packet.size().
void scatter_packet(std::span<const uint8_t> packet, std::span<const Buffers* const> bufs,
                    std::span<uint32_t> used);

}  // namespace vmm::virtio::net
