// A read-only view of an internal snapshot (qemu-img convert -l, qemu-nbd -l): the snapshot's L1
// table stands in for the image's, as QEMU's qcow2_snapshot_load_tmp does. The virtual size
// stays the image's current one (QEMU leaves total_sectors alone), so an L1 table shorter than
// that size needs is padded with empty entries in memory: those ranges read as unallocated.
#include <algorithm>

#include "qcow2/driver.h"

namespace img::qcow2 {

Task<Status> Qcow2Image::load_snapshot_view(const SnapshotSelector& sel) {
  if (has_data_file()) co_return no_data_file_support("internal snapshots");
  if (!read_only_) {
    // QEMU: bdrv_snapshot_load_tmp refuses a writable node the same way.
    co_return invalid_argument(
        strfmt("Device '%s' is writable but does not support snapshots", file_->name().c_str()));
  }
  auto match = [&](const SnapshotEntry& s) {
    return (!sel.id || s.id == *sel.id) && (!sel.name || s.name == *sel.name);
  };
  auto it = snapshots_.end();
  if (sel.id_or_name) {
    it = std::find_if(snapshots_.begin(), snapshots_.end(),
                      [&](const SnapshotEntry& s) { return s.id == sel.id; });
    if (it == snapshots_.end()) {
      it = std::find_if(snapshots_.begin(), snapshots_.end(),
                        [&](const SnapshotEntry& s) { return s.name == sel.name; });
    }
  } else if (sel.id || sel.name) {
    it = std::find_if(snapshots_.begin(), snapshots_.end(), match);
  }
  if (it == snapshots_.end()) {
    co_return make_error(ErrorCode::kNotFound, "Can't find snapshot", ENOENT);
  }
  // load_snapshot_l1 checks the table's size and place against the file (hostile tables).
  CO_ASSIGN_OR_RETURN(std::vector<uint64_t> l1, co_await load_snapshot_l1(*it));
  l1.resize(std::max<uint64_t>(l1.size(), l1_entries_for(h_, h_.size)), 0);
  l1_ = std::move(l1);
  co_return Status{};
}

}  // namespace img::qcow2
