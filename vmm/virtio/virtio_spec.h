// Constants from the virtio 1.2 specification (https://docs.oasis-open.org/virtio/virtio/v1.2/)
// that the transport, the split virtqueue and the devices share. Everything guest-facing is
// little-endian (§1.4); this VMM runs on little-endian hosts only (checked below).
//
// Thread-safety: constants only.
#pragma once

#include <bit>
#include <cstdint>

namespace vmm::virtio {

static_assert(std::endian::native == std::endian::little, "virtio structures are little-endian");

// §2.1 Device status field.
inline constexpr uint8_t kStatusAcknowledge = 1;
inline constexpr uint8_t kStatusDriver = 2;
inline constexpr uint8_t kStatusDriverOk = 4;
inline constexpr uint8_t kStatusFeaturesOk = 8;
inline constexpr uint8_t kStatusNeedsReset = 64;
inline constexpr uint8_t kStatusFailed = 128;

// §6 Reserved feature bits.
inline constexpr unsigned kFRingIndirectDesc = 28;
inline constexpr unsigned kFRingEventIdx = 29;
inline constexpr unsigned kFVersion1 = 32;
inline constexpr unsigned kFAccessPlatform = 33;
inline constexpr unsigned kFRingPacked = 34;
constexpr uint64_t feature(unsigned bit) { return uint64_t{1} << bit; }

// §2.7.5 The virtqueue descriptor table: struct virtq_desc { le64 addr; le32 len; le16 flags;
// le16 next; }.
inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;
inline constexpr uint16_t kDescFIndirect = 4;
inline constexpr uint64_t kDescSize = 16;
// §2.7.6 struct virtq_avail { le16 flags; le16 idx; le16 ring[size]; le16 used_event; }.
inline constexpr uint16_t kAvailFNoInterrupt = 1;
// §2.7.8 struct virtq_used { le16 flags; le16 idx; struct virtq_used_elem { le32 id; le32 len; }
// ring[size]; le16 avail_event; }.
inline constexpr uint16_t kUsedFNoNotify = 1;
inline constexpr uint16_t kMaxQueueSize = 32768;  // §2.7: queue size is at most 32768

// §4.1.4 Virtio structure PCI capabilities: cfg_type values.
inline constexpr uint8_t kPciCapCommonCfg = 1;
inline constexpr uint8_t kPciCapNotifyCfg = 2;
inline constexpr uint8_t kPciCapIsrCfg = 3;
inline constexpr uint8_t kPciCapDeviceCfg = 4;
inline constexpr uint8_t kPciCapPciCfg = 5;
inline constexpr uint8_t kPciCapVendor = 0x09;    // PCI capability ID: vendor specific
inline constexpr uint16_t kMsiNoVector = 0xffff;  // §4.1.5.1.2

// §4.1.4.3 struct virtio_pci_common_cfg: byte offsets.
namespace common {
inline constexpr uint32_t kDeviceFeatureSelect = 0x00;
inline constexpr uint32_t kDeviceFeature = 0x04;
inline constexpr uint32_t kDriverFeatureSelect = 0x08;
inline constexpr uint32_t kDriverFeature = 0x0c;
inline constexpr uint32_t kConfigMsixVector = 0x10;
inline constexpr uint32_t kNumQueues = 0x12;
inline constexpr uint32_t kDeviceStatus = 0x14;
inline constexpr uint32_t kConfigGeneration = 0x15;
inline constexpr uint32_t kQueueSelect = 0x16;
inline constexpr uint32_t kQueueSize = 0x18;
inline constexpr uint32_t kQueueMsixVector = 0x1a;
inline constexpr uint32_t kQueueEnable = 0x1c;
inline constexpr uint32_t kQueueNotifyOff = 0x1e;
inline constexpr uint32_t kQueueDesc = 0x20;
inline constexpr uint32_t kQueueDriver = 0x28;
inline constexpr uint32_t kQueueDevice = 0x30;
inline constexpr uint32_t kSize = 0x38;
}  // namespace common

// Device IDs (§5).
inline constexpr uint16_t kDeviceIdNet = 1;
inline constexpr uint16_t kDeviceIdBlock = 2;
inline constexpr uint16_t kDeviceIdConsole = 3;
inline constexpr uint16_t kDeviceIdEntropy = 4;
inline constexpr uint16_t kDeviceIdBalloon = 5;
inline constexpr uint16_t kDeviceIdScsi = 8;
inline constexpr uint16_t kPciVendorId = 0x1af4;
inline constexpr uint16_t kPciDeviceIdBase = 0x1040;  // modern: 0x1040 + device id (§4.1.2.1)

}  // namespace vmm::virtio
