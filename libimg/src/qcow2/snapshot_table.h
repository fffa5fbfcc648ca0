// The qcow2 snapshot table (spec: "Snapshots"): decode with full validation, encode.
//
// An entry is, big-endian: l1_table_offset (8), l1_size (4), id_str_size (2), name_size (2),
// date_sec (4), date_nsec (4), vm_clock_nsec (8), vm_state_size (4), extra_data_size (4), the
// extra data, the id, the name; the next entry starts at the next multiple of 8. The extra data
// holds vm_state_size_large (8), disk_size (8) and icount (8), each present only if the extra
// data is long enough; bytes past those are kept verbatim ("unknown extra data").
//
// The table is hostile input: its size is not in the header, so it is decoded entry by entry
// with every length bounded by QEMU's limits (65536 entries, 1024 bytes of extra data each,
// 64 MiB in all), never allocating more than those bounds allow.
//
// Thread-safety: pure functions, plus one read.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "img/file.h"
#include "img/status.h"
#include "img/task.h"
#include "qcow2/format.h"

namespace img::qcow2 {

constexpr uint64_t kSnapshotEntryFixed = 40;
constexpr uint64_t kMaxSnapshotTableBytes = 64ull << 20;  // QEMU's QCOW_MAX_SNAPSHOTS_SIZE
constexpr uint64_t kMaxSnapshotExtraData = 1024;          // QCOW_MAX_SNAPSHOT_EXTRA_DATA
constexpr uint64_t kSnapshotExtraWritten = 24;            // vm_state_size_large, disk_size, icount
constexpr uint64_t kNoIcount = UINT64_MAX;                // "not recorded" (extra data too short)

struct SnapshotEntry {
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  std::string id;
  std::string name;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint64_t vm_state_size = 0;  // vm_state_size_large when present
  uint64_t disk_size = 0;      // the image size when the entry has none (v2 writers)
  uint64_t icount = kNoIcount;
  std::vector<uint8_t> unknown_extra;  // extra data past the 24 bytes libimg knows
};

// Decodes nb entries from buf (the bytes from snapshots_offset on; bytes the file does not have
// are zeros). image_size fills disk_size for entries without one. *table_bytes receives the
// table's length (to the end of the last name). Errors are kCorruption and name the entry.
Result<std::vector<SnapshotEntry>> decode_snapshot_table(std::span<const uint8_t> buf, uint32_t nb,
                                                         uint64_t image_size,
                                                         uint64_t* table_bytes);

// Reads and decodes the table the header names (none: empty).
Task<Result<std::vector<SnapshotEntry>>> read_snapshot_table(File& f, const Header& h,
                                                             uint64_t* table_bytes);

// Encodes entries (each with 24 bytes of extra data plus what it carried unknown), padded to
// a multiple of 8 between entries, as QEMU writes it. Fails if it would exceed the limits.
Result<std::vector<uint8_t>> encode_snapshot_table(const std::vector<SnapshotEntry>& entries);

// Checks a snapshot's L1 table location (aligned, within the L1 size limit, inside the file).
Status check_snapshot_l1(const SnapshotEntry& s, uint64_t cluster_size, uint64_t file_size);

}  // namespace img::qcow2
