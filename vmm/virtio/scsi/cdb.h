// The SCSI command decoder of the virtio-scsi device: turns one CDB addressed to one logical unit
// into a Command the device runs (an I/O on the image, a reply built here, or CHECK CONDITION
// with its sense data). It implements the commands Linux's sd driver sends (SPC-4, SBC-3):
// INQUIRY with VPD pages 0x00 0x80 0x83 0xb0 0xb1 0xb2, TEST UNIT READY, READ CAPACITY 10/16,
// READ/WRITE 6/10/16, SYNCHRONIZE CACHE 10/16, REPORT LUNS, MODE SENSE 6/10 (caching and control
// pages), UNMAP, WRITE SAME 10/16, REQUEST SENSE and START STOP UNIT. Anything else is
// ILLEGAL REQUEST with INVALID COMMAND OPERATION CODE; a field we do not implement is INVALID
// FIELD IN CDB with the sense-key-specific field pointer set (SPC-4 §4.5.2.4.2).
//
// Parse, then act: every range is checked against the capacity with overflow-checked arithmetic
// and every length against the unit's limits here, before the device touches the image. Replies
// are already truncated to the CDB's allocation length.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <expected>
#include <span>
#include <string>
#include <vector>

namespace vmm::virtio::scsi {

inline constexpr uint32_t kBlockSize = 512;

// What a logical unit is, as the decoder needs it.
struct LunInfo {
  uint64_t blocks = 0;  // capacity in 512-byte logical blocks
  bool read_only = false;
  bool write_cache = true;       // WCE in the caching mode page: writes need SYNCHRONIZE CACHE
  uint32_t granularity = 8;      // blocks: optimal transfer / UNMAP granularity (cluster size)
  uint32_t max_transfer = 2048;  // blocks per READ/WRITE
  uint32_t max_unmap_blocks = 0x3fffff;  // per UNMAP descriptor and per WRITE SAME
  uint32_t max_unmap_descriptors = 32;
  bool unmap = true;           // UNMAP / WRITE SAME with UNMAP offered (LBPME)
  std::string serial;          // VPD 0x80, at most 20 bytes used
  uint64_t naa = 0;            // VPD 0x83 NAA locally assigned identifier (low 60 bits)
  std::vector<uint16_t> luns;  // every LUN on the target (REPORT LUNS)
};

struct Sense {
  uint8_t key = 0;
  uint8_t asc = 0;
  uint8_t ascq = 0;
  int field = -1;  // INVALID FIELD IN CDB: the CDB byte at fault (sense-key specific), or -1
  bool operator==(const Sense&) const = default;
};

struct UnmapRange {
  uint64_t lba = 0;
  uint32_t blocks = 0;
};

struct Command {
  enum class Kind {
    kReply,      // GOOD with `reply` as data-in (possibly empty)
    kRead,       // lba, blocks into data-in
    kWrite,      // lba, blocks from data-out; fua
    kSync,       // flush
    kUnmap,      // data-out holds an UNMAP parameter list of data_out bytes: parse_unmap_list
    kWriteSame,  // lba, blocks; data-out holds one block unless ndob; unmap allowed
    kError,      // CHECK CONDITION with `sense`
  };
  Kind kind = Kind::kReply;
  uint64_t lba = 0;
  uint32_t blocks = 0;
  bool fua = false;
  bool unmap = false;
  bool ndob = false;
  uint32_t data_out = 0;  // bytes of data-out the command needs (kWrite, kUnmap, kWriteSame)
  std::vector<uint8_t> reply;
  Sense sense;

  // Bytes of data-in the command transfers (kRead: blocks * 512, kReply: reply.size()).
  uint64_t data_in() const;
};

// Decodes cdb (cdb.size() may exceed the command's length: virtio pads to cdb_size).
Command decode_cdb(std::span<const uint8_t> cdb, uint16_t lun, const LunInfo& info);

// The UNMAP parameter list (SBC-3 §5.28.2): block descriptors checked against the capacity and
// the limits; an error is the sense to report.
std::expected<std::vector<UnmapRange>, Sense> parse_unmap_list(std::span<const uint8_t> list,
                                                               const LunInfo& info);

// Fixed-format sense data (SPC-4 §4.5.3), 18 bytes.
std::vector<uint8_t> fixed_sense(const Sense& s);

// The errors the device itself raises.
Sense medium_error(bool write);
Sense write_protected();
Sense lba_out_of_range();

}  // namespace vmm::virtio::scsi
