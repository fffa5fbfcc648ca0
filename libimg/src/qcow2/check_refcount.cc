// Checker, part 2: compare the counted references with the on-disk refcounts, check
// OFLAG_COPIED, and repair (docs/qcow2-format.md, "Check and repair").
//
// The comparison streams over the refcount table: each refcount block that exists is read once
// and compared entry by entry; a range without a block is visited only where references were
// counted. So time and memory follow the metadata, not the length of the file.
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
#include "qcow2/l2_entry.h"
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

// As QEMU's qcow2_get_refcount: the masked offset is used even if reserved bits are set; an
// unaligned block cannot be read; a block past the end of the file reads as zeros (0 here).
Result<uint64_t> Checker::block_offset_of(uint64_t bi) const {
  if (bi >= rt_.size()) return 0;
  const uint64_t off = rt_[bi] & kRefTableOffsetMask;
  if (off == 0 || off >= file_size_) return 0;
  if (!is_aligned(off, cs_)) {
    return make_error(ErrorCode::kCorruption,
                      strfmt("refcount block %" PRIu64 " at 0x%" PRIx64 " is unaligned", bi, off),
                      EIO);
  }
  return off;
}

// REQUIRES: the cluster's refcount block exists and is readable.
Task<Status> Checker::set_disk_refcount(uint64_t cluster, uint64_t value) {
  CO_ASSIGN_OR_RETURN(uint64_t off, block_offset_of(cluster / per_block_));
  CO_RETURN_IF_ERROR(co_await load_block(off));
  set_refcount(block_.data(), cluster % per_block_, h_.refcount_order, value);
  block_dirty_ = true;
  co_return Status{};
}

void Checker::compare_one(uint64_t c, uint64_t disk, uint64_t* highest, bool* any) {
  const uint64_t refs = refs_.get(c);
  if (disk > 0 || refs > 0) {
    *highest = c;
    *any = true;
  }
  if (disk != refs) mismatches_.push_back({c, disk, refs});
}

Task<Result<std::optional<uint64_t>>> Checker::refcount_for_copied(uint64_t c) {
  uint64_t v = 0;
  if (c < nb_clusters_) {
    if (!disk_refcount_after_compare(c, &v)) co_return std::optional<uint64_t>{};
    co_return std::optional<uint64_t>{v};
  }
  auto off = block_offset_of(c / per_block_);
  if (!off) co_return std::optional<uint64_t>{};
  if (*off == 0) co_return std::optional<uint64_t>{0};
  CO_RETURN_IF_ERROR(co_await load_block(*off));
  co_return std::optional<uint64_t>{get_refcount(block_.data(), c % per_block_, h_.refcount_order)};
}

bool Checker::disk_refcount_after_compare(uint64_t c, uint64_t* value) const {
  if (std::binary_search(unreadable_blocks_.begin(), unreadable_blocks_.end(), c / per_block_)) {
    return false;
  }
  auto it = std::lower_bound(mismatches_.begin(), mismatches_.end(), c,
                             [](const Mismatch& m, uint64_t x) { return m.cluster < x; });
  *value = (it != mismatches_.end() && it->cluster == c) ? it->disk : refs_.get(c);
  return true;
}

Task<Status> Checker::compare_and_repair() {
  if (snapshots_unreadable_ && mode_ != RepairMode::kNone) {
    // Found by the corrupt-image corpus (snapshot-extra-size-huge): -r all freed every cluster
    // only the snapshots use. qemu-img refuses to open such an image at all.
    note("ERROR cannot repair: the snapshot table is unreadable, so its clusters are unknown");
    mode_ = RepairMode::kNone;
  }
  uint64_t highest = 0;
  bool any = false;
  const uint64_t nb = nb_clusters_;
  const uint64_t n_blocks = div_round_up(nb, per_block_);
  for (uint64_t bi = 0; bi < n_blocks; ++bi) {
    const uint64_t first = bi * per_block_, end = std::min(nb, first + per_block_);
    auto off = block_offset_of(bi);
    if (!off) {
      // As QEMU, every cluster of an unreadable block is an internal error; say it once.
      note(strfmt("Can't get refcount for cluster %" PRIu64 ": %s", first,
                  off.error().message().c_str()));
      res_.check_errors += end - first;
      unreadable_blocks_.push_back(bi);
      continue;
    }
    if (*off == 0) {
      // No block: every refcount here is 0; only pages with references need a look.
      for (uint64_t c = first; c < end;) {
        const uint64_t pi = c >> RefCounts::kPageBits;
        const uint64_t page_end = std::min(end, (pi + 1) << RefCounts::kPageBits);
        if (!refs_.page_empty(pi)) {
          for (uint64_t x = c; x < page_end; ++x) compare_one(x, 0, &highest, &any);
        }
        c = page_end;
      }
      continue;
    }
    CO_RETURN_IF_ERROR(co_await load_block(*off));
    for (uint64_t c = first; c < end; ++c) {
      compare_one(c, get_refcount(block_.data(), c - first, h_.refcount_order), &highest, &any);
    }
  }
  res_.image_end_offset = any ? (highest + 1) * cs_ : 0;

  uint64_t n_corrupt = 0, n_leak = 0;
  bool zero_refcount = false;
  for (const Mismatch& m : mismatches_) {
    (m.disk < m.refs ? n_corrupt : n_leak)++;
    zero_refcount |= m.disk == 0;
  }
  const bool unreadable = !unreadable_blocks_.empty();
  if (mode_ == RepairMode::kLeaks && (zero_refcount || refblock_errors_ > 0 || unreadable)) {
    // As QEMU: a referenced cluster without refcount, or a broken refcount table, can only be
    // fixed by rebuilding the refcount structures, which only -r all may do.
    ++res_.check_errors;
    co_return make_error(ErrorCode::kCorruption, "ERROR need to rebuild refcount structures", EIO);
  }
  const bool rebuild =
      mode_ == RepairMode::kAll && (n_corrupt > 0 || refblock_errors_ > 0 || unreadable);
  const bool fix_leaks = mode_ != RepairMode::kNone;
  for (Mismatch& m : mismatches_) {
    const bool leak = m.disk > m.refs;
    const bool fixing = rebuild || (leak && fix_leaks);
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
    mismatches_.clear();  // the new refcounts are the counted references
    unreadable_blocks_.clear();
  } else if (fix_leaks && n_leak > 0) {
    for (Mismatch& m : mismatches_) {
      if (m.disk <= m.refs) continue;
      CO_RETURN_IF_ERROR(co_await set_disk_refcount(m.cluster, m.refs));
      m.disk = m.refs;
    }
    CO_RETURN_IF_ERROR(co_await write_back_block());
    CO_RETURN_IF_ERROR(co_await f_.flush());
  }
  co_return Status{};
}

// Writes new refcount blocks and table after the last used cluster, then switches the header.
// As QEMU's rebuild_refcount_structure, only ranges holding a used cluster get a block, so a
// sparse file does not get blocks for its holes.
Task<Status> Checker::rebuild_refcounts() {
  CO_RETURN_IF_ERROR(co_await write_back_block());
  block_offset_ = 0;
  // The old table and blocks are no longer referenced once the header points elsewhere.
  for (auto [off, len] : refcount_structures_) {
    for (uint64_t c = off / cs_; c <= (off + len - 1) / cs_; ++c) {
      if (uint64_t v = refs_.get(c)) refs_.set(c, v - 1);
    }
  }
  const uint64_t used = refs_.end();
  // Block indexes holding a used cluster (pages are never larger than what they hold).
  std::vector<uint64_t> blocks;
  for (uint64_t pi = 0; pi < refs_.pages(); ++pi) {
    if (refs_.page_empty(pi)) continue;
    const uint64_t lo = pi << RefCounts::kPageBits;
    const uint64_t hi = std::min(used, lo + RefCounts::kPageClusters);
    for (uint64_t c = lo; c < hi; ++c) {
      if (refs_.get(c) == 0) continue;
      const uint64_t bi = c / per_block_;
      if (blocks.empty() || blocks.back() != bi) blocks.push_back(bi);
      c = std::max(c, (bi + 1) * per_block_ - 1);  // the rest of this block is covered
    }
  }
  // The new blocks and the table go at `start`; they need blocks of their own: iterate to the
  // fixed point (each round only grows, and a block covers >= 64 clusters).
  const uint64_t start = std::max(used, div_round_up(file_size_, cs_));
  uint64_t extra = 0, table_clusters = 1;
  std::vector<uint64_t> new_blocks;
  for (;;) {
    const uint64_t total_end = start + blocks.size() + extra + table_clusters;
    new_blocks.clear();
    for (uint64_t bi = start / per_block_; bi <= (total_end - 1) / per_block_; ++bi) {
      if (!std::binary_search(blocks.begin(), blocks.end(), bi)) new_blocks.push_back(bi);
    }
    const uint64_t top = std::max(blocks.empty() ? 0 : blocks.back(), (total_end - 1) / per_block_);
    const uint64_t tc = div_round_up((top + 1) * 8, cs_);
    if (new_blocks.size() <= extra && tc <= table_clusters) break;
    extra = std::max<uint64_t>(extra, new_blocks.size());
    table_clusters = std::max(table_clusters, tc);
  }
  if (table_clusters * cs_ > kMaxRefcountTableBytes) {
    co_return no_space("rebuilt refcount table would exceed 8 MiB");
  }
  std::vector<uint64_t> all = blocks;
  all.insert(all.end(), new_blocks.begin(), new_blocks.end());
  std::sort(all.begin(), all.end());
  // Placement: block k of `all` at cluster start + k, then the table; all have refcount 1.
  const uint64_t table_cluster = start + blocks.size() + extra;
  for (uint64_t c = start; c < table_cluster + table_clusters; ++c) refs_.set(c, 1);

  const uint64_t max = max_refcount(h_.refcount_order);
  std::vector<uint8_t> buf(cs_);
  std::vector<uint8_t> table(table_clusters * cs_, 0);
  for (size_t k = 0; k < all.size(); ++k) {
    std::fill(buf.begin(), buf.end(), 0);
    const uint64_t first = all[k] * per_block_;
    for (uint64_t i = 0; i < per_block_; ++i) {
      set_refcount(buf.data(), i, h_.refcount_order, std::min(refs_.get(first + i), max));
    }
    const uint64_t at = (start + k) * cs_;
    CO_RETURN_IF_ERROR(co_await f_.write(at, buf.data(), cs_));
    store_be64(table.data() + 8 * all[k], at);
  }
  const uint64_t table_off = table_cluster * cs_;
  CO_RETURN_IF_ERROR(co_await f_.write(table_off, table.data(), table.size()));
  CO_RETURN_IF_ERROR(co_await f_.flush());

  // Switch: refcount_table_offset (8 bytes at 48) and refcount_table_clusters (4 at 56).
  uint8_t field[12];
  store_be64(field, table_off);
  store_be32(field + 8, static_cast<uint32_t>(table_clusters));
  CO_RETURN_IF_ERROR(co_await f_.write(kOffRefcountTableOffset, field, sizeof field));
  CO_RETURN_IF_ERROR(co_await f_.flush());

  h_.refcount_table_offset = table_off;
  h_.refcount_table_clusters = static_cast<uint32_t>(table_clusters);
  CO_ASSIGN_OR_RETURN(file_size_, f_.size());
  rt_.assign(table_clusters * cs_ / 8, 0);
  for (size_t k = 0; k < all.size(); ++k) rt_[all[k]] = (start + k) * cs_;
  res_.image_end_offset = (table_cluster + table_clusters) * cs_;
  co_return Status{};
}

// OFLAG_COPIED must be set exactly when the refcount is 1 (spec: "Cluster mapping"), on the
// active L1 entries (for the L2 table) and L2 entries (for the data cluster). The refcounts are
// the on-disk ones as the comparison found (and repaired) them: no refcount block is read again.
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
    const uint64_t e = load_be64(l1.data() + 8 * i);
    const uint64_t l2_off = e & kL1OffsetMask;
    if (l2_off == 0 || !is_aligned(l2_off, cs_)) continue;
    // An L2 table past the end of the file has refcount 0: its COPIED flag is checked too, as
    // QEMU does (check_oflag_copied), before its (absent) entries are skipped.
    CO_ASSIGN_OR_RETURN(std::optional<uint64_t> l2_rc, co_await refcount_for_copied(l2_off / cs_));
    if (!l2_rc) continue;  // reported by the comparison
    const uint64_t rc = *l2_rc;
    if ((rc == 1) != ((e & kOflagCopied) != 0)) {
      note(strfmt("%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu64 " l1_entry=%" PRIx64
                  " refcount=%" PRIu64,
                  fix ? "Repairing" : "ERROR", i, e, rc));
      if (fix) {
        store_be64(l1.data() + 8 * i, rc == 1 ? (e | kOflagCopied) : (e & ~kOflagCopied));
        l1_dirty = true;
        ++res_.corruptions_fixed;
      } else {
        ++res_.corruptions;
      }
    }
    if (l2_off >= file_size_) continue;
    // A table cut by the end of the file reads as zeros past it, as in the walk (and as QEMU).
    CO_ASSIGN_OR_RETURN(uint64_t n, co_await f_.read(l2_off, l2.data(), cs_));
    std::fill(l2.begin() + static_cast<ptrdiff_t>(std::min<uint64_t>(n, cs_)), l2.end(), 0);
    bool l2_dirty = false;
    for (uint64_t j = 0; j + step <= cs_; j += step) {
      const uint64_t raw = load_be64(l2.data() + j);
      if (raw == 0) continue;
      const uint64_t bitmap = step == 16 ? load_be64(l2.data() + j + 8) : 0;
      const L2Entry d =
          decode_l2(raw, h_.cluster_bits, h_.version, step == 16, bitmap, has_data_file_).entry;
      if (!d.has_host_cluster() || !is_aligned(d.host_offset, cs_)) continue;
      if (fix && !has_data_file_ && d.host_offset >= walked_file_size_) {
        // The walk reported it (and counted no reference): there is no data, and QEMU reads
        // zeros there. With kAll the entry becomes what reads as those zeros: a zero cluster
        // (v3) or unallocated (v2, which has no zero flag; without a backing file it reads
        // zeros too). Judged on the size the walk saw, so a rebuilt refcount structure placed
        // there is never mapped as data. Without repair, its COPIED flag is checked as QEMU
        // does (refcount 0).
        note(strfmt("Repairing L2 entry %" PRIx64 ": cluster lies past the end of the file", raw));
        store_l2(l2.data(), j / step, step,
                 h_.version >= 3 ? encode_zero(0, false, step == 16) : RawL2{});
        l2_dirty = true;
        --res_.corruptions;
        ++res_.corruptions_fixed;
        continue;
      }
      uint64_t drc = 1;
      if (!has_data_file_) {
        CO_ASSIGN_OR_RETURN(std::optional<uint64_t> r,
                            co_await refcount_for_copied(d.host_offset / cs_));
        if (!r) continue;
        drc = *r;
      }
      if ((drc == 1) == d.copied) continue;
      note(strfmt("%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%" PRIu64,
                  fix ? "Repairing" : "ERROR", raw, drc));
      if (fix) {
        store_be64(l2.data() + j, drc == 1 ? (raw | kOflagCopied) : (raw & ~kOflagCopied));
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
