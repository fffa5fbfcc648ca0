// virtio-blk constants and guest-facing layouts (virtio 1.2 §5.2).
//
// Thread-safety: constants and plain structs only.
#pragma once

#include <cstdint>

namespace vmm::virtio::blk {

// §5.2.3 Feature bits.
inline constexpr unsigned kFSizeMax = 1;
inline constexpr unsigned kFSegMax = 2;
inline constexpr unsigned kFGeometry = 4;
inline constexpr unsigned kFRo = 5;
inline constexpr unsigned kFBlkSize = 6;
inline constexpr unsigned kFFlush = 9;
inline constexpr unsigned kFTopology = 10;
inline constexpr unsigned kFConfigWce = 11;
inline constexpr unsigned kFMq = 12;
inline constexpr unsigned kFDiscard = 13;
inline constexpr unsigned kFWriteZeroes = 14;

// §5.2.6 Request types and status values.
inline constexpr uint32_t kTIn = 0;
inline constexpr uint32_t kTOut = 1;
inline constexpr uint32_t kTFlush = 4;
inline constexpr uint32_t kTGetId = 8;
inline constexpr uint32_t kTDiscard = 11;
inline constexpr uint32_t kTWriteZeroes = 13;
inline constexpr uint8_t kSOk = 0;
inline constexpr uint8_t kSIoErr = 1;
inline constexpr uint8_t kSUnsupp = 2;

inline constexpr uint64_t kSectorSize = 512;  // §5.2.6: sectors are always 512 bytes
inline constexpr uint32_t kIdBytes = 20;      // VIRTIO_BLK_ID_BYTES

// §5.2.6 struct virtio_blk_req header: le32 type; le32 reserved; le64 sector.
struct ReqHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
static_assert(sizeof(ReqHeader) == 16);

// §5.2.6 struct virtio_blk_discard_write_zeroes: le64 sector; le32 num_sectors; le32 flags
// (bit 0: unmap, the rest reserved).
struct DiscardWriteZeroesSeg {
  uint64_t sector;
  uint32_t num_sectors;
  uint32_t flags;
};
static_assert(sizeof(DiscardWriteZeroesSeg) == 16);
inline constexpr uint32_t kSegFlagUnmap = 1;

// §5.2.4 struct virtio_blk_config: byte offsets of the fields this device fills.
namespace cfg {
inline constexpr uint32_t kCapacity = 0;           // le64, in 512-byte sectors
inline constexpr uint32_t kSizeMax = 8;            // le32
inline constexpr uint32_t kSegMax = 12;            // le32
inline constexpr uint32_t kBlkSize = 20;           // le32
inline constexpr uint32_t kPhysicalBlockExp = 24;  // u8 (topology)
inline constexpr uint32_t kAlignmentOffset = 25;   // u8
inline constexpr uint32_t kMinIoSize = 26;         // le16
inline constexpr uint32_t kOptIoSize = 28;         // le32
inline constexpr uint32_t kWriteback = 32;         // u8
inline constexpr uint32_t kNumQueues = 34;         // le16
inline constexpr uint32_t kMaxDiscardSectors = 36;
inline constexpr uint32_t kMaxDiscardSeg = 40;
inline constexpr uint32_t kDiscardSectorAlignment = 44;
inline constexpr uint32_t kMaxWriteZeroesSectors = 48;
inline constexpr uint32_t kMaxWriteZeroesSeg = 52;
inline constexpr uint32_t kWriteZeroesMayUnmap = 56;  // u8
inline constexpr uint32_t kSize = 60;  // through write_zeroes_may_unmap and its padding
}  // namespace cfg

}  // namespace vmm::virtio::blk
