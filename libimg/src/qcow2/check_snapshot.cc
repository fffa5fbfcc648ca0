// Checker: the snapshot table (spec: "Snapshots"). Its size is not in the header, so it is read
// entry by entry, each bounded: an entry is l1_table_offset (8), l1_size (4), id_str_size (2),
// name_size (2), date_sec (4), date_nsec (4), vm_clock_nsec (8), vm_state_size (4),
// extra_data_size (4), then the extra data, the id and the name; the next entry starts at the
// next multiple of 8. The last entry's padding need not exist (QEMU ends the table after the
// last name, and the file may end there), and bytes past the end of the file read as zeros, as
// they do for QEMU. Version 3 entries carry at least 16 bytes of extra data
// (vm_state_size_large, disk_size); fewer is QEMU's "snapshot table entry N is incomplete".

#include <algorithm>
#include <cinttypes>
#include <cstring>

#include "qcow2/check.h"
#include "qcow2/layout.h"

namespace img::qcow2 {

namespace {
constexpr uint64_t kSnapshotHeaderSize = 40;
constexpr uint64_t kMaxSnapshotTableBytes = 64ull << 20;  // QEMU's QCOW_MAX_SNAPSHOTS_SIZE
constexpr uint64_t kMaxSnapshotExtraData = 1024;          // QCOW_MAX_SNAPSHOT_EXTRA_DATA
constexpr uint64_t kMinV3ExtraData = 16;                  // vm_state_size_large + disk_size
}  // namespace

Task<Status> Checker::read_snapshot_table() {
  if (h_.nb_snapshots == 0) co_return Status{};
  // Entries are read through a window of the file, so 65536 small entries are not 65536 reads.
  std::vector<uint8_t> window;
  uint64_t window_off = 0;
  const uint64_t start = h_.snapshots_offset;
  uint64_t off = start;
  auto fail = [&](std::string why) {
    note("ERROR failed to read the snapshot table: " + why);
    ++res_.check_errors;
    snapshots_unreadable_ = true;
    snaps_.clear();  // as QEMU: an unreadable table is not walked (its clusters look leaked)
    off = start;
  };
  for (uint32_t i = 0; i < h_.nb_snapshots; ++i) {
    off = align_up(off, 8);
    if (window.empty() || off < window_off ||
        off + kSnapshotHeaderSize > window_off + window.size()) {
      window.assign(64 * 1024, 0);
      window_off = off;
      CO_ASSIGN_OR_RETURN(uint64_t got, co_await f_.read(off, window.data(), window.size()));
      (void)got;  // the rest stays zero: past the end of the file reads as zeros
    }
    const uint8_t* e = window.data() + (off - window_off);
    const uint64_t l1_off = load_be64(e);
    const uint64_t l1_size = load_be32(e + 8);
    const uint64_t id_size = load_be16(e + 12), name_size = load_be16(e + 14);
    const uint64_t extra = load_be32(e + 36);
    if (extra > kMaxSnapshotExtraData) {
      fail(strfmt("Too much extra metadata in snapshot table entry %u", i));
      break;
    }
    off += kSnapshotHeaderSize + extra + id_size + name_size;
    if (off - start > kMaxSnapshotTableBytes) {
      fail("Snapshot table is too big");
      break;
    }
    if (h_.version >= 3 && extra < kMinV3ExtraData) {
      error(strfmt("ERROR snapshot table entry %u is incomplete", i));
    }
    snaps_.push_back({l1_off, l1_size});
  }
  snapshots_size_ = off - start;
  co_return Status{};
}

Task<Status> Checker::walk_snapshots() {
  for (size_t i = 0; i < snaps_.size(); ++i) {
    const Snapshot& s = snaps_[i];
    if (!is_aligned(s.l1_offset, cs_) || s.l1_size * 8 > kMaxL1Bytes ||
        (s.l1_size > 0 && (s.l1_offset == 0 || s.l1_offset > file_size_ ||
                           s.l1_size * 8 > file_size_ - s.l1_offset))) {
      error(strfmt("ERROR snapshot %zu: L1 table offset 0x%" PRIx64 " size %" PRIu64 " invalid", i,
                   s.l1_offset, s.l1_size));
      continue;
    }
    CO_RETURN_IF_ERROR(co_await walk_l1(s.l1_offset, s.l1_size, /*active=*/false));
  }
  co_return Status{};
}

}  // namespace img::qcow2
