// virtio-net constants and layouts from the virtio 1.2 specification, §5.1 (Network Device).
// Everything guest-facing is little-endian (virtio_spec.h checks the host is too).
//
// Thread-safety: constants only.
#pragma once

#include <cstdint>

namespace vmm::virtio::net {

// §5.1.3 Feature bits.
inline constexpr unsigned kFCsum = 0;       // device handles packets with partial checksum
inline constexpr unsigned kFGuestCsum = 1;  // driver handles packets with partial checksum
inline constexpr unsigned kFMac = 5;        // device has given a MAC address
inline constexpr unsigned kFGuestTso4 = 7;  // driver can receive TSOv4
inline constexpr unsigned kFGuestTso6 = 8;  // driver can receive TSOv6
inline constexpr unsigned kFGuestEcn = 9;   // driver can receive TSO with ECN
inline constexpr unsigned kFGuestUfo = 10;  // driver can receive UFO
inline constexpr unsigned kFHostTso4 = 11;  // device can receive TSOv4
inline constexpr unsigned kFHostTso6 = 12;  // device can receive TSOv6
inline constexpr unsigned kFHostEcn = 13;   // device can receive TSO with ECN
inline constexpr unsigned kFHostUfo = 14;   // device can receive UFO
inline constexpr unsigned kFMrgRxbuf = 15;  // driver can merge receive buffers
inline constexpr unsigned kFStatus = 16;    // configuration status field is available
inline constexpr unsigned kFCtrlVq = 17;    // control channel is available

// §5.1.4 struct virtio_net_config { u8 mac[6]; le16 status; le16 max_virtqueue_pairs; ... }.
// The fields after max_virtqueue_pairs exist only with features this device does not offer.
namespace cfg {
inline constexpr uint32_t kMac = 0;
inline constexpr uint32_t kStatus = 6;
inline constexpr uint32_t kMaxVirtqueuePairs = 8;
inline constexpr uint32_t kSize = 10;
}  // namespace cfg
inline constexpr uint16_t kStatusLinkUp = 1;

// §5.1.2 Virtqueues: receiveq1 = 0, transmitq1 = 1 (no control queue: CTRL_VQ is not offered).
inline constexpr uint16_t kRxQueue = 0;
inline constexpr uint16_t kTxQueue = 1;

// §5.1.6 struct virtio_net_hdr { u8 flags; u8 gso_type; le16 hdr_len; le16 gso_size;
// le16 csum_start; le16 csum_offset; le16 num_buffers; }: 12 bytes once VERSION_1 is negotiated
// (num_buffers is always there, §5.1.6.1), the layout the tap's vnet header takes too when its
// size is set to 12 (TUNSETVNETHDRSZ).
namespace hdr {
inline constexpr uint32_t kFlags = 0;
inline constexpr uint32_t kGsoType = 1;
inline constexpr uint32_t kHdrLen = 2;
inline constexpr uint32_t kGsoSize = 4;
inline constexpr uint32_t kCsumStart = 6;
inline constexpr uint32_t kCsumOffset = 8;
inline constexpr uint32_t kNumBuffers = 10;
inline constexpr uint32_t kSize = 12;
}  // namespace hdr
inline constexpr uint8_t kHdrFNeedsCsum = 1;
inline constexpr uint8_t kHdrFDataValid = 2;
inline constexpr uint8_t kHdrFRscInfo = 4;
inline constexpr uint8_t kGsoNone = 0;
inline constexpr uint8_t kGsoTcpv4 = 1;
inline constexpr uint8_t kGsoUdp = 3;
inline constexpr uint8_t kGsoTcpv6 = 4;
inline constexpr uint8_t kGsoEcn = 0x80;

// The largest frame either way: a 64 KiB GSO packet (the most Linux builds, GSO_MAX_SIZE) plus
// an Ethernet header; with the virtio header in front, the 65562 bytes Linux's virtio_net sizes
// its big receive buffers for. The smallest: an Ethernet header (dst, src, type).
inline constexpr uint32_t kMaxFrame = 65536 + 14;
inline constexpr uint32_t kMinFrame = 14;
inline constexpr uint32_t kMaxPacket = hdr::kSize + kMaxFrame;
// §5.1.6.3.1: without MRG_RXBUF and without GUEST_TSO*/UFO, each receive buffer holds at least
// an MTU-sized frame; a driver that posts less loses the frames that do not fit.
inline constexpr uint32_t kMinRxBuffer = hdr::kSize;

}  // namespace vmm::virtio::net
