// read_qcow2_info: the header facts `img info` prints under "Format specific information"
// (compat, cluster size, refcount bits, lazy refcounts, corrupt, extended L2, compression type).
// Spec: qemu/qemu docs/interop/qcow2.rst, "Header"; docs/qcow2-format.md.

#include "img/qcow2.h"
#include "qcow2/bitmap.h"
#include "qcow2/format.h"
#include "qcow2/snapshot_table.h"

namespace img {

Task<Result<Qcow2Info>> read_qcow2_info(File& f) {
  CO_ASSIGN_OR_RETURN(qcow2::Header h, co_await qcow2::read_header(f));
  Qcow2Info info;
  info.version = static_cast<int>(h.version);
  info.cluster_size = static_cast<uint32_t>(h.cluster_size());
  info.refcount_bits = h.refcount_bits();
  info.virtual_size = h.size;
  info.lazy_refcounts = h.compatible_features & qcow2::kCompatLazyRefcounts;
  info.corrupt = h.has(qcow2::kIncompatCorrupt);
  info.dirty = h.has(qcow2::kIncompatDirty);
  info.extended_l2 = h.has(qcow2::kIncompatExtendedL2);
  info.compression_type = h.compression_type == 1 ? "zstd" : "zlib";
  info.backing_file = h.backing_file;
  info.backing_format = h.backing_format;
  if (h.has(qcow2::kIncompatExternalData)) {
    info.data_file = h.external_data_file;
    info.data_file_raw = h.autoclear_features & qcow2::kAutoclearDataFileRaw;
  }
  info.nb_snapshots = h.nb_snapshots;
  uint64_t table_bytes = 0;
  CO_ASSIGN_OR_RETURN(auto sns, co_await qcow2::read_snapshot_table(f, h, &table_bytes));
  for (const auto& s : sns) {
    SnapshotInfo i{.id = s.id,
                   .name = s.name,
                   .vm_state_size = s.vm_state_size,
                   .date_sec = s.date_sec,
                   .date_nsec = s.date_nsec,
                   .vm_clock_nsec = s.vm_clock_nsec,
                   .disk_size = s.disk_size};
    if (s.icount != qcow2::kNoIcount) i.icount = s.icount;
    info.snapshots.push_back(std::move(i));
  }
  CO_ASSIGN_OR_RETURN(auto bitmaps, co_await qcow2::read_bitmap_directory(f, h));
  for (const auto& b : bitmaps) {
    info.bitmaps.push_back({.name = b.name,
                            .granularity = uint64_t{1} << b.granularity_bits,
                            .in_use = (b.flags & qcow2::kBitmapFlagInUse) != 0,
                            .auto_ = (b.flags & qcow2::kBitmapFlagAuto) != 0});
  }
  co_return info;
}

}  // namespace img
