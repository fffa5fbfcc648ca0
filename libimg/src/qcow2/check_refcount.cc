// Checker, part 2: compare the counted references with the on-disk refcounts, check
// OFLAG_COPIED, and repair (docs/qcow2-format.md, "Check and repair").
//
// Repair order keeps a crash mid-repair harmless:
// - leaks (refcount too high) are lowered in place: a crash leaves them leaked, as before;
// - refcounts too low are never patched in place: new refcount blocks and a new table are written
//   past the end of the file and flushed, and only then does one 12-byte header write switch to
//   them (then a flush). Until that write the old structures stay in force.
// Spec: qemu/qemu docs/interop/qcow2.rst, "Host cluster management", "Cluster mapping".

#include <algorithm>
#include <cinttypes>

#include "qcow2/check.h"
#include "qcow2/layout.h"

namespace img::qcow2 {

Task<Status> Checker::load_block(uint64_t block_offset) {
  if (block_offset == block_offset_) co_return Status{};
  CO_RETURN_IF_ERROR(co_await write_back_block());
  block_.resize(cs_);
  block_offset_ = 0;
  CO_RETURN_IF_ERROR(co_await f_.read_exact(block_offset, block_.data(), cs_, "refcount block"));
  block_offset_ = block_offset;
  co_return Status{};
}

Task<Status> Checker::write_back_block() {
  if (!block_dirty_) co_return Status{};
  block_dirty_ = false;
  co_return co_await f_.write(block_offset_, block_.data(), cs_);
}

// The on-disk refcount of a cluster; 0 where the table has no block for it.
Task<Result<uint64_t>> Checker::disk_refcount(uint64_t cluster) {
  const uint64_t per_block = refcount_block_entries(h_.cluster_bits, h_.refcount_order);
  uint64_t bi = cluster / per_block;
  if (bi >= rt_.size()) co_return 0;
  uint64_t off = rt_[bi] & kRefTableOffsetMask;
  if (off == 0) co_return 0;
  if (!is_aligned(off, cs_) || off >= file_size_) {
    co_return corruption(strfmt("refcount block %" PRIu64 " at 0x%" PRIx64 " is invalid", bi, off));
  }
  CO_RETURN_IF_ERROR(co_await load_block(off));
  co_return get_refcount(block_.data(), cluster % per_block, h_.refcount_order);
}

// REQUIRES: the cluster's refcount block exists (disk_refcount returned a value > 0 for it).
Task<Status> Checker::set_disk_refcount(uint64_t cluster, uint64_t value) {
  const uint64_t per_block = refcount_block_entries(h_.cluster_bits, h_.refcount_order);
  CO_RETURN_IF_ERROR(co_await load_block(rt_[cluster / per_block] & kRefTableOffsetMask));
  set_refcount(block_.data(), cluster % per_block, h_.refcount_order, value);
  block_dirty_ = true;
  co_return Status{};
}

Task<Status> Checker::compare_and_repair() {
  struct Mismatch {
    uint64_t cluster, disk, refs;
  };
  std::vector<Mismatch> bad;
  const uint64_t per_block = refcount_block_entries(h_.cluster_bits, h_.refcount_order);
  uint64_t n_corrupt = 0, n_leak = 0, highest = 0;
  bool any = false, unreadable = false;
  for (uint64_t i = 0; i < refs_.size(); ++i) {
    auto disk = co_await disk_refcount(i);
    if (!disk) {
      // Report each bad block once, not once per cluster it covers.
      if (!unreadable || i % per_block == 0) {
        note(strfmt("Can't get refcount for cluster %" PRIu64 ": %s", i,
                    disk.error().message().c_str()));
      }
      ++res_.check_errors;
      unreadable = true;
      continue;
    }
    if (*disk > 0 || refs_[i] > 0) {
      highest = i;
      any = true;
    }
    if (*disk != refs_[i]) {
      bad.push_back({i, *disk, refs_[i]});
      (*disk < refs_[i] ? n_corrupt : n_leak)++;
    }
  }
  res_.image_end_offset = any ? (highest + 1) * cs_ : 0;

  const bool rebuild = mode_ == RepairMode::kAll && (n_corrupt > 0 || refblock_errors_ > 0 || unreadable);
  const bool fix_leaks = mode_ != RepairMode::kNone;
  for (const auto& m : bad) {
    bool leak = m.disk > m.refs;
    bool fixing = rebuild || (leak && fix_leaks);
    note(strfmt("%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
                fixing ? "Repairing" : (leak ? "Leaked" : "ERROR"), m.cluster, m.disk, m.refs));
    if (fixing) {
      (leak ? res_.leaks_fixed : res_.corruptions_fixed)++;
    } else {
      (leak ? res_.leaks : res_.corruptions)++;
    }
  }
  if (rebuild) {
    // The refcount table errors counted in the walk are fixed by the rebuild too.
    res_.corruptions -= refblock_errors_;
    res_.corruptions_fixed += refblock_errors_;
    CO_RETURN_IF_ERROR(co_await rebuild_refcounts());
  } else if (fix_leaks && n_leak > 0) {
    for (const auto& m : bad) {
      if (m.disk > m.refs) CO_RETURN_IF_ERROR(co_await set_disk_refcount(m.cluster, m.refs));
    }
    CO_RETURN_IF_ERROR(co_await write_back_block());
    CO_RETURN_IF_ERROR(co_await f_.flush());
  }
  co_return Status{};
}

// Writes new refcount blocks and table after the last used cluster, then switches the header.
Task<Status> Checker::rebuild_refcounts() {
  CO_RETURN_IF_ERROR(co_await write_back_block());
  block_offset_ = 0;
  // The old table and blocks are no longer referenced once the header points elsewhere.
  for (auto [off, len] : refcount_structures_) {
    for (uint64_t c = off / cs_; c <= (off + len - 1) / cs_ && c < refs_.size(); ++c) {
      if (refs_[c] > 0) --refs_[c];
    }
  }
  uint64_t used = 0;
  for (uint64_t i = 0; i < refs_.size(); ++i) {
    if (refs_[i]) used = i + 1;
  }
  const uint64_t start = std::max(used, div_round_up(file_size_, cs_));
  const uint64_t per_block = refcount_block_entries(h_.cluster_bits, h_.refcount_order);
  const RefcountStructure rs = refcount_structure_for(start, h_);
  const uint64_t rb = rs.blocks, rt = rs.table_clusters;
  if (rt * cs_ > kMaxRefcountTableBytes) {
    co_return no_space("rebuilt refcount table would exceed 8 MiB");
  }
  refs_.resize(std::max<uint64_t>(refs_.size(), start + rb + rt), 0);
  for (uint64_t c = start; c < start + rb + rt; ++c) refs_[c] = 1;

  const uint64_t max = max_refcount(h_.refcount_order);
  std::vector<uint8_t> buf(cs_);
  for (uint64_t b = 0; b < rb; ++b) {
    std::fill(buf.begin(), buf.end(), 0);
    for (uint64_t i = 0; i < per_block; ++i) {
      uint64_t c = b * per_block + i;
      if (c >= refs_.size()) break;
      set_refcount(buf.data(), i, h_.refcount_order, std::min<uint64_t>(refs_[c], max));
    }
    CO_RETURN_IF_ERROR(co_await f_.write((start + b) * cs_, buf.data(), cs_));
  }
  std::vector<uint8_t> table(rt * cs_, 0);
  for (uint64_t b = 0; b < rb; ++b) store_be64(table.data() + 8 * b, (start + b) * cs_);
  const uint64_t table_off = (start + rb) * cs_;
  CO_RETURN_IF_ERROR(co_await f_.write(table_off, table.data(), table.size()));
  CO_RETURN_IF_ERROR(co_await f_.flush());

  // Switch: refcount_table_offset (8 bytes at 48) and refcount_table_clusters (4 at 56).
  uint8_t field[12];
  store_be64(field, table_off);
  store_be32(field + 8, static_cast<uint32_t>(rt));
  CO_RETURN_IF_ERROR(co_await f_.write(kOffRefcountTableOffset, field, sizeof field));
  CO_RETURN_IF_ERROR(co_await f_.flush());

  h_.refcount_table_offset = table_off;
  h_.refcount_table_clusters = static_cast<uint32_t>(rt);
  CO_ASSIGN_OR_RETURN(file_size_, f_.size());
  rt_.assign(rt * cs_ / 8, 0);
  for (uint64_t b = 0; b < rb; ++b) rt_[b] = (start + b) * cs_;
  res_.image_end_offset = (start + rb + rt) * cs_;
  co_return Status{};
}

// OFLAG_COPIED must be set exactly when the refcount is 1 (spec: "Cluster mapping"), on the
// active L1 entries (for the L2 table) and L2 entries (for the data cluster).
Task<Status> Checker::check_copied() {
  if (h_.l1_size == 0) co_return Status{};
  const bool fix = mode_ == RepairMode::kAll;
  std::vector<uint8_t> l1(uint64_t{h_.l1_size} * 8);
  CO_ASSIGN_OR_RETURN(uint64_t got, co_await f_.read(h_.l1_table_offset, l1.data(), l1.size()));
  (void)got;
  bool l1_dirty = false;
  std::vector<uint8_t> l2(cs_);
  const uint64_t step = l2_entry_bytes(h_);
  for (uint64_t i = 0; i < h_.l1_size; ++i) {
    uint64_t e = load_be64(l1.data() + 8 * i);
    uint64_t l2_off = e & kL1OffsetMask;
    if (l2_off == 0 || !is_aligned(l2_off, cs_) || l2_off >= file_size_) continue;
    auto rc = co_await disk_refcount(l2_off / cs_);
    if (!rc) continue;  // reported by the comparison
    if ((*rc == 1) != ((e & kOflagCopied) != 0)) {
      note(strfmt("%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu64 " l1_entry=%" PRIx64
                  " refcount=%" PRIu64,
                  fix ? "Repairing" : "ERROR", i, e, *rc));
      if (fix) {
        store_be64(l1.data() + 8 * i, *rc == 1 ? (e | kOflagCopied) : (e & ~kOflagCopied));
        l1_dirty = true;
        ++res_.corruptions_fixed;
      } else {
        ++res_.corruptions;
      }
    }
    CO_RETURN_IF_ERROR(co_await f_.read_exact(l2_off, l2.data(), cs_, "L2 table"));
    bool l2_dirty = false;
    for (uint64_t j = 0; j + step <= cs_; j += step) {
      uint64_t d = load_be64(l2.data() + j);
      uint64_t off = d & kL2OffsetMask;
      if ((d & kOflagCompressed) || off == 0 || !is_aligned(off, cs_)) continue;
      uint64_t drc = 1;
      if (!has_data_file_) {
        auto r = co_await disk_refcount(off / cs_);
        if (!r) continue;
        drc = *r;
      }
      if ((drc == 1) == ((d & kOflagCopied) != 0)) continue;
      note(strfmt("%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%" PRIu64,
                  fix ? "Repairing" : "ERROR", d, drc));
      if (fix) {
        store_be64(l2.data() + j, drc == 1 ? (d | kOflagCopied) : (d & ~kOflagCopied));
        l2_dirty = true;
        ++res_.corruptions_fixed;
      } else {
        ++res_.corruptions;
      }
    }
    if (l2_dirty) CO_RETURN_IF_ERROR(co_await f_.write(l2_off, l2.data(), cs_));
  }
  if (l1_dirty) CO_RETURN_IF_ERROR(co_await f_.write(h_.l1_table_offset, l1.data(), l1.size()));
  if (fix) CO_RETURN_IF_ERROR(co_await f_.flush());
  co_return Status{};
}

}  // namespace img::qcow2
