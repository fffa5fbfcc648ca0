// Checker, part 1: count the references to every host cluster, the way `qemu-img check` builds
// its in-memory refcount table (docs/qcow2-format.md, "Check and repair"). Every offset comes from
// a hostile file: the count array is sized by the real file length, and a reference reaching a
// cluster or more past the end of the file is reported, never allocated for.
// Spec: qemu/qemu docs/interop/qcow2.rst, "Cluster mapping", "Compressed Clusters Descriptor",
// "Snapshots", "Host cluster management".

#include <algorithm>
#include <cinttypes>

#include "qcow2/check.h"
#include "qcow2/layout.h"

namespace img::qcow2 {

namespace {
constexpr uint64_t kMaxSnapshotTableBytes = 64ull << 20;  // QEMU's QCOW_MAX_SNAPSHOTS_SIZE
constexpr uint64_t kMaxSnapshotExtraData = 1024;          // QCOW_MAX_SNAPSHOT_EXTRA_DATA
}  // namespace

Checker::Checker(File& f, const Header& h, uint64_t file_size, RepairMode mode, CheckResult& res)
    : f_(f),
      h_(h),
      file_size_(file_size),
      cs_(h.cluster_size()),
      mode_(mode),
      res_(res),
      has_data_file_(h.has(kIncompatExternalData)) {
  refs_.assign(div_round_up(file_size, cs_) + 1, 0);
}

void Checker::error(std::string msg) {
  ++res_.corruptions;
  res_.messages.push_back(std::move(msg));
}

void Checker::inc(uint64_t off, uint64_t len) {
  if (len == 0) return;
  // As QEMU: the last cluster may be partly past the end of the file, more is an error.
  if (off > file_size_ + cs_ || off + len > file_size_ + cs_ - 1 || off + len < off) {
    error(strfmt("ERROR: counting reference for region exceeding the end of the file by one "
                 "cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64,
                 off, len));
    return;
  }
  const uint64_t max = max_refcount(h_.refcount_order);
  for (uint64_t c = off / cs_; c <= (off + len - 1) / cs_; ++c) {
    if (c >= refs_.size()) break;  // unreachable given the bound above
    if (refs_[c] >= max || refs_[c] == UINT32_MAX) {
      error(strfmt("ERROR: overflow cluster offset=0x%" PRIx64, c * cs_));
      continue;
    }
    ++refs_[c];
  }
}

Task<Status> Checker::count_references() {
  inc(0, cs_);  // the header cluster, with the extensions and the backing file name
  CO_RETURN_IF_ERROR(co_await walk_l1(h_.l1_table_offset, h_.l1_size, /*active=*/true));
  if (h_.nb_snapshots > 0) CO_RETURN_IF_ERROR(co_await walk_snapshots());
  CO_RETURN_IF_ERROR(co_await walk_refcount_table());
  co_return Status{};
}

Task<Status> Checker::walk_l1(uint64_t l1_off, uint64_t l1_entries, bool active) {
  if (l1_entries == 0) co_return Status{};
  inc(l1_off, l1_entries * 8);
  std::vector<uint8_t> l1(l1_entries * 8);  // <= 32 MiB, checked by the caller
  CO_ASSIGN_OR_RETURN(uint64_t got, co_await f_.read(l1_off, l1.data(), l1.size()));
  (void)got;  // past the end of the file reads as zeros (and inc() reported it)
  for (uint64_t i = 0; i < l1_entries; ++i) {
    uint64_t l2_off = load_be64(l1.data() + 8 * i) & kL1OffsetMask;
    if (l2_off == 0) continue;
    if (!is_aligned(l2_off, cs_)) {
      error(strfmt("ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 entry corrupted",
                   l2_off));
      continue;
    }
    inc(l2_off, cs_);
    if (l2_off >= file_size_) continue;
    CO_RETURN_IF_ERROR(co_await walk_l2(l2_off, active));
  }
  co_return Status{};
}

// Fragmentation is counted within each L2 table, as qemu-img does.
Task<Status> Checker::walk_l2(uint64_t l2_off, bool active) {
  uint64_t next_contiguous = 0;
  std::vector<uint8_t> l2(cs_);
  CO_ASSIGN_OR_RETURN(uint64_t got, co_await f_.read(l2_off, l2.data(), cs_));
  (void)got;
  const uint64_t step = l2_entry_bytes(h_);
  for (uint64_t i = 0; i + step <= cs_; i += step) {
    uint64_t e = load_be64(l2.data() + i);
    if (e & kOflagCompressed) {
      if (e & kOflagCopied) {
        error(strfmt("ERROR: coffset=%" PRIx64 ": copied flag must never be set for compressed "
                     "clusters",
                     decode_compressed_entry(e, h_.cluster_bits).offset));
      }
      if (has_data_file_) {
        error(strfmt("ERROR: compressed cluster %" PRIu64 " with data file, entry=0x%" PRIx64,
                     i / step, e));
        continue;
      }
      auto ext = decode_compressed_entry(e, h_.cluster_bits);
      inc(ext.offset, ext.size);
      if (active) {
        ++res_.allocated_clusters;
        ++res_.compressed_clusters;
        ++res_.fragmented_clusters;  // compressed clusters are fragmented by nature (as QEMU)
      }
      continue;
    }
    uint64_t off = e & kL2OffsetMask;
    if (off == 0) continue;  // unallocated, or a zero cluster without a host cluster
    if (!is_aligned(off, cs_)) {
      error(strfmt("ERROR offset=%" PRIx64 ": Cluster is not properly aligned; L2 entry corrupted.",
                   off));
      continue;
    }
    if (active) {
      ++res_.allocated_clusters;
      if (next_contiguous != 0 && off != next_contiguous) ++res_.fragmented_clusters;
      next_contiguous = off + cs_;
    }
    if (!has_data_file_) inc(off, cs_);
  }
  co_return Status{};
}

// Spec "Snapshots": each entry is l1_table_offset (8), l1_size (4), id_str_size (2),
// name_size (2), date (8), vm_clock_nsec (8), vm_state_size (4), extra_data_size (4), extra data,
// id, name; padded to a multiple of 8.
Task<Status> Checker::walk_snapshots() {
  uint64_t avail = file_size_ > h_.snapshots_offset ? file_size_ - h_.snapshots_offset : 0;
  std::vector<uint8_t> t(std::min(avail, kMaxSnapshotTableBytes));
  CO_RETURN_IF_ERROR(co_await f_.read_exact(h_.snapshots_offset, t.data(), t.size(),
                                            "snapshot table"));
  struct Snap {
    uint64_t l1_off;
    uint64_t l1_size;
  };
  std::vector<Snap> snaps;
  uint64_t off = 0;
  for (uint32_t i = 0; i < h_.nb_snapshots; ++i) {
    if (t.size() - off < 40) {
      error(strfmt("ERROR snapshot table: entry %u lies past the end of the table", i));
      break;
    }
    const uint8_t* e = t.data() + off;
    uint64_t extra = load_be32(e + 36);
    uint64_t len = align_up(40 + extra + load_be16(e + 12) + load_be16(e + 14), 8);
    if (extra > kMaxSnapshotExtraData || len > t.size() - off) {
      error(strfmt("ERROR snapshot table: entry %u (extra_data_size %" PRIu64
                   ") lies past the end of the table",
                   i, extra));
      break;
    }
    snaps.push_back({load_be64(e), load_be32(e + 8)});
    off += len;
  }
  inc(h_.snapshots_offset, off);
  for (size_t i = 0; i < snaps.size(); ++i) {
    const Snap& s = snaps[i];
    if (!is_aligned(s.l1_off, cs_) || s.l1_size * 8 > kMaxL1Bytes ||
        (s.l1_size > 0 && (s.l1_off == 0 || s.l1_off > file_size_ ||
                           s.l1_size * 8 > file_size_ - s.l1_off))) {
      error(strfmt("ERROR snapshot %zu: L1 table offset 0x%" PRIx64 " size %" PRIu64 " invalid", i,
                   s.l1_off, s.l1_size));
      continue;
    }
    CO_RETURN_IF_ERROR(co_await walk_l1(s.l1_off, s.l1_size, /*active=*/false));
  }
  co_return Status{};
}

Task<Status> Checker::walk_refcount_table() {
  uint64_t rt_bytes = uint64_t{h_.refcount_table_clusters} * cs_;  // <= 8 MiB, inside the file
  inc(h_.refcount_table_offset, rt_bytes);
  refcount_structures_.push_back({h_.refcount_table_offset, rt_bytes});
  std::vector<uint8_t> buf(rt_bytes);
  CO_RETURN_IF_ERROR(
      co_await f_.read_exact(h_.refcount_table_offset, buf.data(), rt_bytes, "refcount table"));
  rt_.resize(rt_bytes / 8);
  for (uint64_t i = 0; i < rt_.size(); ++i) {
    rt_[i] = load_be64(buf.data() + 8 * i);
    uint64_t off = rt_[i] & kRefTableOffsetMask;
    if (off == 0) continue;
    if (!is_aligned(off, cs_) || (rt_[i] & kRefTableReservedMask)) {
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
  }
  co_return Status{};
}

}  // namespace img::qcow2
