// Checker, part 1: count the references to every host cluster, the way `qemu-img check` builds
// its in-memory refcount table (docs/qcow2-format.md, "Check and repair"). Every offset comes from
// a hostile file: a reference reaching a cluster or more past the end of the file is reported,
// never counted, so the counts stay bounded by the file; and they are kept sparse (RefCounts).
// Spec: qemu/qemu docs/interop/qcow2.rst, "Cluster mapping", "Compressed Clusters Descriptor",
// "Snapshots", "Bitmaps", "Host cluster management".

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <climits>

#include "qcow2/bitmap.h"
#include "qcow2/check.h"
#include "qcow2/l2_entry.h"
#include "qcow2/layout.h"

namespace img::qcow2 {

Checker::Checker(File& f, const Header& h, uint64_t file_size, RepairMode mode, CheckResult& res)
    : f_(f),
      h_(h),
      file_size_(file_size),
      walked_file_size_(file_size),
      cs_(h.cluster_size()),
      mode_(mode),
      res_(res),
      has_data_file_(h.has(kIncompatExternalData)),
      per_block_(refcount_block_entries(h.cluster_bits, h.refcount_order)),
      refs_(max_refcount(h.refcount_order)),
      nb_clusters_(div_round_up(file_size, h.cluster_size())) {}

void Checker::error(std::string msg) {
  ++res_.corruptions;
  res_.messages.push_back(std::move(msg));
}

void Checker::inc(uint64_t off, uint64_t len) {
  if (len == 0) return;
  // As QEMU: the last cluster may be partly past the end of the file, more is an error.
  if (off > file_size_ + cs_ || off + len > file_size_ + cs_ - 1 || off + len < off) {
    error(
        strfmt("ERROR: counting reference for region exceeding the end of the file by one "
               "cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64,
               off, len));
    return;
  }
  const uint64_t last = (off + len - 1) / cs_;
  for (uint64_t c = off / cs_; c <= last; ++c) {
    if (!refs_.inc(c)) error(strfmt("ERROR: overflow cluster offset=0x%" PRIx64, c * cs_));
  }
  nb_clusters_ = std::max(nb_clusters_, last + 1);
}

Task<Status> Checker::count_references() {
  // QEMU refuses files of more than INT_MAX clusters ("Check failed: File too large").
  if (div_round_up(file_size_, cs_) > INT_MAX) {
    ++res_.check_errors;
    co_return make_error(ErrorCode::kNotSupported, "File too large", EFBIG);
  }
  // The snapshot table is decoded first, as QEMU does, so its findings come first.
  CO_RETURN_IF_ERROR(co_await read_snapshot_table());
  inc(0, cs_);  // the header cluster, with the extensions and the backing file name
  CO_RETURN_IF_ERROR(co_await walk_l1(h_.l1_table_offset, h_.l1_size, /*active=*/true));
  CO_RETURN_IF_ERROR(co_await walk_snapshots());
  inc(h_.snapshots_offset, snapshots_size_);
  CO_RETURN_IF_ERROR(co_await walk_refcount_table());
  co_return Status{};
}

Task<Status> Checker::walk_l1(uint64_t l1_off, uint64_t l1_entries, bool active) {
  if (l1_entries == 0) co_return Status{};
  inc(l1_off, l1_entries * 8);
  std::vector<uint8_t> l1(l1_entries * 8);  // <= 32 MiB, checked by the caller
  CO_ASSIGN_OR_RETURN(uint64_t got, co_await f_.read(l1_off, l1.data(), l1.size()));
  (void)got;  // past the end of the file reads as zeros (and inc() reported it)
  std::vector<uint8_t> l2(cs_);
  for (uint64_t i = 0; i < l1_entries; ++i) {
    const uint64_t e = load_be64(l1.data() + 8 * i);
    // Spec "Cluster mapping": L1 bits 1-8 and 56-62 are reserved and must be zero.
    if (e & kL1ReservedMask)
      error(strfmt("ERROR found L1 entry with reserved bits set: %" PRIx64, e));
    const uint64_t l2_off = e & kL1OffsetMask;
    // As QEMU's check_refcounts_l1, only an all-zero entry is unallocated: flags with offset 0
    // make the header cluster count as an L2 table (reads treat the entry as unallocated).
    if (e == 0) continue;
    inc(l2_off, cs_);
    // As QEMU's check_refcounts_l1: an unaligned table is reported, and still counted (both
    // clusters it touches) and walked, so its clusters do not look leaked to a repair.
    if (!is_aligned(l2_off, cs_)) {
      error(strfmt("ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 entry corrupted",
                   l2_off));
    }
    if (l2_off >= file_size_) continue;
    CO_ASSIGN_OR_RETURN(uint64_t n, co_await f_.read(l2_off, l2.data(), cs_));
    std::fill(l2.begin() + static_cast<ptrdiff_t>(std::min<uint64_t>(n, cs_)), l2.end(), 0);
    CO_RETURN_IF_ERROR(co_await walk_l2(l2.data(), active));
  }
  co_return Status{};
}

// Fragmentation is counted within each L2 table, as qemu-img does.
Task<Status> Checker::walk_l2(const uint8_t* l2, bool active) {
  uint64_t next_contiguous = 0;
  const uint64_t step = l2_entry_bytes(h_);
  const bool extended = step == 16;
  for (uint64_t i = 0; i + step <= cs_; i += step) {
    const uint64_t raw = load_be64(l2 + i);
    const uint64_t bitmap = extended ? load_be64(l2 + i + 8) : 0;
    if (raw == 0 && bitmap == 0) continue;
    const L2Decoded d =
        decode_l2(raw, h_.cluster_bits, h_.version, extended, bitmap, has_data_file_);
    const L2Entry& e = d.entry;
    if (d.defect == L2Defect::kReservedBits) {
      error(strfmt("ERROR found l2 entry with reserved bits set: %" PRIx64, raw));
    }
    // Spec "Extended L2 Entries": a subcluster never both allocated and zero; no allocated
    // subclusters without a host cluster; a compressed cluster's bitmap all zero. QEMU's
    // check_refcounts_l2 counts each as a corruption; the compressed one's data is then not
    // counted as referenced.
    if (d.defect == L2Defect::kAllocAndZero) {
      error(strfmt("ERROR offset=%" PRIx64 ": Allocated cluster has corrupted subcluster "
                   "allocation bitmap",
                   e.host_offset));
    } else if (d.defect == L2Defect::kUnallocatedAlloc) {
      error("ERROR: Unallocated cluster has non-zero subcluster allocation map");
    } else if (d.defect == L2Defect::kCompressedBitmap && !has_data_file_) {
      if (e.copied) {
        error(strfmt("ERROR: coffset=0x%" PRIx64 ": copied flag must never be set for "
                     "compressed clusters",
                     e.host_offset));
      }
      error(strfmt("ERROR compressed cluster %" PRIu64 " with non-zero subcluster allocation "
                   "bitmap, entry=0x%" PRIx64,
                   i / step, raw));
      continue;
    }
    switch (e.kind) {
      case ClusterKind::kCompressed:
        if (e.copied) {
          error(strfmt("ERROR: coffset=0x%" PRIx64 ": copied flag must never be set for "
                       "compressed clusters",
                       e.host_offset));
        }
        if (has_data_file_) {
          error(strfmt("ERROR: compressed cluster %" PRIu64 " with data file, entry=0x%" PRIx64,
                       i / step, raw));
          break;
        }
        inc(e.host_offset, e.compressed_size);
        if (active) {
          ++res_.allocated_clusters;
          ++res_.compressed_clusters;
          ++res_.fragmented_clusters;  // compressed clusters are fragmented by nature (as QEMU)
        }
        break;
      case ClusterKind::kNormal:
      case ClusterKind::kZeroAlloc:
        if (!is_aligned(e.host_offset, cs_)) {
          error(strfmt(e.kind == ClusterKind::kNormal
                           ? "ERROR offset=%" PRIx64
                             ": Data cluster is not properly aligned; L2 entry corrupted."
                           : "ERROR offset=%" PRIx64
                             ": Preallocated cluster is not properly aligned; L2 entry corrupted.",
                       e.host_offset));
        }
        if (active) {
          ++res_.allocated_clusters;
          if (next_contiguous != 0 && e.host_offset != next_contiguous) {
            ++res_.fragmented_clusters;
          }
          next_contiguous = e.host_offset + cs_;
        }
        // As QEMU, even an unaligned offset counts (both clusters it touches).
        if (!has_data_file_) inc(e.host_offset, cs_);
        break;
      case ClusterKind::kZeroPlain:
      case ClusterKind::kUnallocated:
        break;
    }
  }
  co_return Status{};
}

// Spec "Bitmaps": the directory, each bitmap's table and the table's data clusters are
// referenced. As QEMU, only while the autoclear bit says the bitmaps are valid: a writer without
// bitmap support clears it, and then the clusters are leaked.
Task<Status> Checker::walk_bitmaps() {
  const HeaderExtension* ext = find_bitmaps_extension(h_);
  if (!ext || h_.version < 3 || !(h_.autoclear_features & kAutoclearBitmaps)) co_return Status{};
  auto be = decode_bitmaps_extension(ext->data, h_, file_size_);
  if (!be) {
    error("ERROR " + be.error().message());
    co_return Status{};
  }
  inc(be->directory_offset, be->directory_size);
  std::vector<uint8_t> dir(be->directory_size);  // <= 64 MiB, inside the file
  CO_RETURN_IF_ERROR(
      co_await f_.read_exact(be->directory_offset, dir.data(), dir.size(), "bitmap directory"));
  auto entries = decode_bitmap_directory(dir, be->nb_bitmaps, h_);
  if (!entries) {
    error("ERROR " + entries.error().message());
    co_return Status{};
  }
  std::vector<uint8_t> table;
  for (const BitmapDirEntry& b : *entries) {
    const uint64_t bytes = uint64_t{b.table_size} * 8;  // <= 8 MiB (decoder bound)
    inc(b.table_offset, bytes);
    if (b.table_offset > file_size_ || bytes > file_size_ - b.table_offset) continue;
    table.resize(bytes);
    CO_RETURN_IF_ERROR(co_await f_.read_exact(b.table_offset, table.data(), bytes, "bitmap table"));
    for (uint64_t j = 0; j < b.table_size; ++j) {
      const uint64_t e = load_be64(table.data() + 8 * j);
      const uint64_t off = e & kBitmapTableOffsetMask;
      if ((e & kBitmapTableReservedMask) || (off != 0 && !is_aligned(off, cs_))) {
        error(strfmt("ERROR bitmap '%s': bitmap table entry %" PRIu64 " (0x%" PRIx64
                     ") is corrupted",
                     b.name.c_str(), j, e));
        continue;
      }
      if (off) inc(off, cs_);
    }
  }
  co_return Status{};
}

Task<Status> Checker::walk_refcount_table() {
  const uint64_t rt_bytes = uint64_t{h_.refcount_table_clusters} * cs_;  // <= 8 MiB, in the file
  inc(h_.refcount_table_offset, rt_bytes);
  refcount_structures_.push_back({h_.refcount_table_offset, rt_bytes});
  CO_RETURN_IF_ERROR(co_await walk_bitmaps());  // QEMU's order: bitmaps before the blocks
  std::vector<uint8_t> buf(rt_bytes);
  CO_RETURN_IF_ERROR(
      co_await f_.read_exact(h_.refcount_table_offset, buf.data(), rt_bytes, "refcount table"));
  rt_.resize(rt_bytes / 8);
  for (uint64_t i = 0; i < rt_.size(); ++i) {
    rt_[i] = load_be64(buf.data() + 8 * i);
    // Spec "Host cluster management": refcount table bits 0-8 are reserved (zero).
    if (rt_[i] & kRefTableReservedMask) {
      error(strfmt("ERROR refcount table entry %" PRIu64 " has reserved bits set", i));
      ++refblock_errors_;
      continue;
    }
    const uint64_t off = rt_[i] & kRefTableOffsetMask;
    if (off == 0) continue;
    if (!is_aligned(off, cs_)) {
      error(strfmt("ERROR refcount block %" PRIu64 " is not cluster aligned; refcount table entry "
                   "corrupted",
                   i));
      ++refblock_errors_;
      continue;
    }
    if (off >= file_size_) {
      error(strfmt("ERROR refcount block %" PRIu64 " is outside image", i));
      ++refblock_errors_;
      continue;
    }
    inc(off, cs_);
    refcount_structures_.push_back({off, cs_});
    // A refcount block shared with anything else is corrupt (QEMU's check_refblocks).
    if (uint64_t n = refs_.get(off / cs_); n != 1) {
      error(strfmt("ERROR refcount block %" PRIu64 " refcount=%" PRIu64, i, n));
      ++refblock_errors_;
    }
  }
  co_return Status{};
}

}  // namespace img::qcow2
