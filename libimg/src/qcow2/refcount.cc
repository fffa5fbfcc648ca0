// Refcounts and the cluster allocator (qcow2.rst "Host cluster management").
//
// refcount of host cluster c: reftable_[c / refblock_entries_] locates the refcount block, whose
// entry c % refblock_entries_ holds it. A missing block (entry 0, or an index past the table)
// means every cluster it would describe is free.
//
// Everything here that changes refcounts REQUIRES alloc_mu_: there is one allocator per image,
// so concurrent writers always get distinct clusters.
#include <algorithm>

#include "qcow2/driver.h"

namespace img::qcow2 {

Status Qcow2Image::check_refblock_offset(uint64_t block_index, uint64_t off) const {
  if (!is_aligned(off, cluster_size_) || off < cluster_size_) {
    return corruption(strfmt("%s: refcount table entry %llu (0x%llx) is not a valid cluster offset",
                             file_->name().c_str(), (unsigned long long)block_index,
                             (unsigned long long)off));
  }
  return {};
}

Task<Result<uint64_t>> Qcow2Image::refcount_of(uint64_t cluster) {
  uint64_t b = cluster / refblock_entries_;
  if (b >= reftable_.size()) co_return 0;
  uint64_t off = reftable_[b] & kRefTableOffsetMask;
  if (off == 0) co_return 0;
  CO_RETURN_IF_ERROR(check_refblock_offset(b, off));
  CO_ASSIGN_OR_RETURN(auto ref, co_await refcount_cache_->get(off));
  co_return get_refcount(ref.data(), cluster % refblock_entries_, refcount_order_);
}

Task<Status> Qcow2Image::update_refcounts(uint64_t first, uint64_t count, int64_t delta) {
  uint64_t maxv = max_refcount(refcount_order_);
  uint64_t c = first;
  while (c < first + count) {
    uint64_t b = c / refblock_entries_;
    uint64_t off = b < reftable_.size() ? reftable_[b] & kRefTableOffsetMask : 0;
    if (off == 0) {
      co_return corruption(strfmt("%s: refcount block for cluster %llu is missing",
                                  file_->name().c_str(), (unsigned long long)c));
    }
    CO_RETURN_IF_ERROR(check_refblock_offset(b, off));
    CO_ASSIGN_OR_RETURN(auto ref, co_await refcount_cache_->get(off));
    uint64_t end = std::min(first + count, (b + 1) * refblock_entries_);
    for (; c < end; ++c) {
      uint64_t i = c % refblock_entries_;
      uint64_t v = get_refcount(ref.data(), i, refcount_order_);
      if (delta < 0 && v < uint64_t(-delta)) {
        co_return corruption(strfmt("%s: refcount of cluster %llu would drop below zero",
                                    file_->name().c_str(), (unsigned long long)c));
      }
      if (delta > 0 && maxv - v < uint64_t(delta)) {
        co_return invalid_argument(strfmt("%s: refcount of cluster %llu would exceed %llu "
                                          "(refcount_bits=%u)",
                                          file_->name().c_str(), (unsigned long long)c,
                                          (unsigned long long)maxv, 1u << refcount_order_));
      }
      v += delta;
      set_refcount(ref.data(), i, refcount_order_, v);
      if (v == 0 && c < free_cluster_index_) free_cluster_index_ = c;
      // The reference that let go of it may still be on disk (see alloc_clusters).
      if (v == 0) freed_unsynced_.insert(c);
      // A host cluster that compressed clusters no longer use may be handed out whole now: new
      // compressed data must not continue in it.
      if (v == 0 && free_byte_offset_ && c == free_byte_offset_ >> cluster_bits_) {
        free_byte_offset_ = 0;
      }
    }
    refcount_cache_->mark_dirty(ref);
  }
  co_return Status{};
}

Task<Result<uint64_t>> Qcow2Image::find_free_run(uint64_t n) {
  uint64_t start = free_cluster_index_;
  uint64_t len = 0;
  uint64_t c = start;
  while (len < n) {
    uint64_t b = c / refblock_entries_;
    uint64_t off = b < reftable_.size() ? reftable_[b] & kRefTableOffsetMask : 0;
    uint64_t block_end = (b + 1) * refblock_entries_;
    if (off == 0) {
      // No block: all free.
      uint64_t take = std::min(block_end - c, n - len);
      if (len == 0) start = c;
      len += take;
      c += take;
      continue;
    }
    CO_RETURN_IF_ERROR(check_refblock_offset(b, off));
    CO_ASSIGN_OR_RETURN(auto ref, co_await refcount_cache_->get(off));
    for (; c < block_end && len < n; ++c) {
      if (get_refcount(ref.data(), c % refblock_entries_, refcount_order_) == 0) {
        if (len == 0) start = c;
        ++len;
      } else {
        len = 0;
      }
    }
    // A host offset must fit the 56 bits of an L2 entry.
    if ((c << cluster_bits_) >= kMaxImageSize) {
      co_return no_space(file_->name() + ": no free cluster below the 2^56 offset limit");
    }
  }
  // Refcounts that call the header, a table or a refcount block free are corrupt: handing the
  // cluster out would overwrite metadata (and the allocator could chase its own tail forever).
  if (overlaps_metadata(start << cluster_bits_, n << cluster_bits_)) {
    Status s = co_await mark_corrupt(strfmt("refcount of metadata cluster %llu..%llu is 0",
                                            (unsigned long long)start,
                                            (unsigned long long)(start + n - 1)));
    co_return Unexpected(std::move(s).error());
  }
  co_return start;
}

Task<Status> Qcow2Image::create_refblock(uint64_t b, uint64_t at_cluster) {
  std::vector<uint8_t> buf(cluster_size_, 0);
  bool self = at_cluster / refblock_entries_ == b;
  // A block inside the range it describes counts itself; otherwise the (existing) block of its
  // own range does, and that count must be on disk before the table points at the new block.
  if (self) set_refcount(buf.data(), at_cluster % refblock_entries_, refcount_order_, 1);
  uint64_t off = at_cluster << cluster_bits_;
  CO_RETURN_IF_ERROR(co_await file_->write(off, buf.data(), buf.size()));
  if (!self) {
    CO_RETURN_IF_ERROR(co_await update_refcounts(at_cluster, 1, +1));
    CO_RETURN_IF_ERROR(co_await refcount_cache_->flush());
  }
  // The block must be on disk before the table entry that points to it.
  uint64_t rcn = refcount_cache_->written_count();
  CO_RETURN_IF_ERROR(co_await file_->flush());
  refcount_cache_->synced_up_to(rcn);
  uint8_t e[8];
  store_be64(e, off);
  CO_RETURN_IF_ERROR(co_await file_->write(h_.refcount_table_offset + b * 8, e, 8));
  reftable_[b] = off;
  metadata_clusters_.insert(at_cluster);
  co_return Status{};
}

Task<Status> Qcow2Image::grow_reftable(uint64_t needed_index) {
  const uint64_t per_cluster = cluster_size_ / 8;
  const uint64_t E = refblock_entries_;
  uint64_t old_entries = reftable_.size();
  uint64_t entries = std::max<uint64_t>(needed_index + 1, old_entries + old_entries / 2 + 1);
  uint64_t table_clusters = 0, blocks = 0, start = 0;
  std::vector<uint64_t> new_blocks;  // block indices that get a new refcount block
  // Find a place for the new table plus the blocks that must describe it, at a fixed point:
  // blocks first, then the table, all counted by blocks of the new table.
  for (;;) {
    table_clusters = div_round_up(entries, per_cluster);
    CO_ASSIGN_OR_RETURN(start, co_await find_free_run(table_clusters + blocks));
    uint64_t end = start + table_clusters + blocks;
    new_blocks.clear();
    for (uint64_t bi = start / E; bi <= (end - 1) / E; ++bi) {
      if (bi >= old_entries || (reftable_[bi] & kRefTableOffsetMask) == 0) new_blocks.push_back(bi);
    }
    uint64_t max_index = std::max(needed_index, (end - 1) / E);
    if (max_index >= table_clusters * per_cluster) {
      entries = max_index + 1;
      continue;
    }
    if (new_blocks.size() <= blocks) break;
    blocks = new_blocks.size();
  }
  entries = table_clusters * per_cluster;
  if (table_clusters * cluster_size_ > kMaxRefcountTableBytes) {
    co_return no_space(strfmt("%s: the refcount table would exceed %llu MiB",
                              file_->name().c_str(),
                              (unsigned long long)(kMaxRefcountTableBytes >> 20)));
  }
  uint64_t end = start + table_clusters + blocks;
  uint64_t table_cluster = start + blocks;

  // New blocks, filled with the refcounts of [start, end) that fall in their ranges.
  std::vector<uint64_t> table(entries, 0);
  std::copy(reftable_.begin(), reftable_.end(), table.begin());
  for (size_t k = 0; k < new_blocks.size(); ++k) table[new_blocks[k]] = (start + k) << cluster_bits_;
  for (size_t k = 0; k < new_blocks.size(); ++k) {
    uint64_t bi = new_blocks[k];
    std::vector<uint8_t> buf(cluster_size_, 0);
    for (uint64_t c = std::max(start, bi * E); c < std::min(end, (bi + 1) * E); ++c) {
      set_refcount(buf.data(), c % E, refcount_order_, 1);
    }
    CO_RETURN_IF_ERROR(co_await file_->write((start + k) << cluster_bits_, buf.data(), buf.size()));
  }
  // Clusters of [start, end) described by blocks that already exist.
  for (uint64_t c = start; c < end;) {
    uint64_t bi = c / E;
    uint64_t stop = std::min(end, (bi + 1) * E);
    if (std::find(new_blocks.begin(), new_blocks.end(), bi) == new_blocks.end()) {
      CO_RETURN_IF_ERROR(co_await update_refcounts(c, stop - c, +1));
    }
    c = stop;
  }
  std::vector<uint8_t> raw(table_clusters * cluster_size_, 0);
  for (uint64_t i = 0; i < entries; ++i) store_be64(&raw[i * 8], table[i]);
  CO_RETURN_IF_ERROR(co_await file_->write(table_cluster << cluster_bits_, raw.data(), raw.size()));
  CO_RETURN_IF_ERROR(co_await refcount_cache_->flush());
  uint64_t rcn = refcount_cache_->written_count();
  CO_RETURN_IF_ERROR(co_await file_->flush());
  refcount_cache_->synced_up_to(rcn);
  // Switch the header to the new table (offset and size in one 12-byte write).
  uint8_t hdr[12];
  store_be64(hdr, table_cluster << cluster_bits_);
  store_be32(hdr + 8, static_cast<uint32_t>(table_clusters));
  {
    auto guard = co_await header_mu_.lock();
    CO_RETURN_IF_ERROR(co_await file_->write(kOffRefcountTableOffset, hdr, sizeof hdr));
    CO_RETURN_IF_ERROR(co_await file_->flush());
  }
  uint64_t old_off = h_.refcount_table_offset;
  uint64_t old_clusters = h_.refcount_table_clusters;
  h_.refcount_table_offset = table_cluster << cluster_bits_;
  h_.refcount_table_clusters = static_cast<uint32_t>(table_clusters);
  reftable_ = std::move(table);
  for (size_t k = 0; k < new_blocks.size(); ++k) metadata_clusters_.insert(start + k);
  // The old table is referenced by nothing now.
  if (old_clusters) CO_RETURN_IF_ERROR(co_await update_refcounts(old_off >> cluster_bits_, old_clusters, -1));
  co_return Status{};
}

Task<Result<uint64_t>> Qcow2Image::alloc_clusters(uint64_t n) {
  for (;;) {
    CO_ASSIGN_OR_RETURN(uint64_t start, co_await find_free_run(n));
    bool changed = false;
    for (uint64_t b = start / refblock_entries_; b <= (start + n - 1) / refblock_entries_; ++b) {
      if (b >= reftable_.size()) {
        CO_RETURN_IF_ERROR(co_await grow_reftable(b));
        changed = true;
        break;
      }
      if ((reftable_[b] & kRefTableOffsetMask) == 0) {
        // As QEMU: the new block takes the first free cluster (the start of the run), which the
        // block itself describes (if in its range) or an existing lower block does (blocks below
        // b exist: b is the first missing one). The run then moves past it; every round creates
        // one block, so this converges however long the run is.
        CO_RETURN_IF_ERROR(co_await create_refblock(b, start));
        changed = true;
        break;
      }
    }
    if (changed) continue;  // the run moved under us: search again
    CO_RETURN_IF_ERROR(co_await sync_before_reuse(start, n));
    CO_RETURN_IF_ERROR(co_await update_refcounts(start, n, +1));
    free_cluster_index_ = start + n;
    co_return start << cluster_bits_;
  }
}

Task<Status> Qcow2Image::sync_before_reuse(uint64_t first, uint64_t n) {
  if (freed_unsynced_.empty()) co_return Status{};
  bool reuse = false;
  for (uint64_t c = first; c < first + n && !reuse; ++c) reuse = freed_unsynced_.count(c);
  if (!reuse) co_return Status{};
  // Every cluster in the set was freed after the change that dropped its reference (an L2
  // entry, marked dirty before the refcount fell, or a table pointer written to the file), so
  // writing the dirty L2 tables and flushing the file makes all of them safe to hand out.
  co_return co_await sync_l2_tables(/*with_refcounts=*/false);
}

Task<Result<uint64_t>> Qcow2Image::alloc_bytes(uint64_t size) {
  uint64_t offset = free_byte_offset_;
  if (offset) {
    // A host cluster whose refcount is at its maximum takes no further compressed cluster
    // (with refcount_bits=1 every compressed cluster starts a host cluster of its own).
    CO_ASSIGN_OR_RETURN(uint64_t rc, co_await refcount_of(offset >> cluster_bits_));
    if (rc >= max_refcount(refcount_order_)) offset = 0;
  }
  uint64_t free_in_cluster = offset ? cluster_size_ - (offset & (cluster_size_ - 1)) : 0;
  if (offset && free_in_cluster >= size) {
    CO_RETURN_IF_ERROR(co_await update_refcounts(offset >> cluster_bits_, 1, +1));
  } else {
    // The new cluster's refcount (1) is this compressed cluster's reference.
    CO_ASSIGN_OR_RETURN(uint64_t fresh, co_await alloc_clusters(1));
    if (offset && align_up(offset, cluster_size_) == fresh) {
      // The data spans the end of the current host cluster into the new one, which is the
      // next cluster: the current one gains a reference too.
      CO_RETURN_IF_ERROR(co_await update_refcounts(offset >> cluster_bits_, 1, +1));
    } else {
      offset = fresh;
    }
  }
  // The descriptor holds the offset in 62 - (cluster_bits - 8) bits (spec: "Compressed
  // Clusters Descriptor").
  uint64_t limit = 1ull << (62 - (cluster_bits_ - 8));
  if (offset + size > limit) {
    co_return no_space(strfmt("%s: compressed data cannot be placed above host offset 0x%llx",
                              file_->name().c_str(), (unsigned long long)limit));
  }
  uint64_t end = offset + size;
  free_byte_offset_ = (end & (cluster_size_ - 1)) ? end : 0;
  co_return offset;
}

Qcow2Image::HostRun Qcow2Image::host_run_of(const L2Entry& e) const {
  uint64_t len = e.kind == ClusterKind::kCompressed ? e.compressed_size : cluster_size_;
  uint64_t first = e.host_offset >> cluster_bits_;
  return {first, ((e.host_offset + len - 1) >> cluster_bits_) - first + 1};
}

Task<Status> Qcow2Image::release_clusters(HostRun r, bool punch) {
  for (uint64_t c = r.first_cluster; c < r.first_cluster + r.count; ++c) {
    // Only a cluster nobody else references (a snapshot, another compressed cluster sharing the
    // host cluster) loses its data; alloc_mu_ keeps it from being reallocated meanwhile.
    if (punch) {
      CO_ASSIGN_OR_RETURN(uint64_t rc, co_await refcount_of(c));
      if (rc == 1) CO_RETURN_IF_ERROR(co_await file_->discard(c << cluster_bits_, cluster_size_));
    }
    CO_RETURN_IF_ERROR(co_await update_refcounts(c, 1, -1));
  }
  co_return Status{};
}

Task<Status> Qcow2Image::free_clusters(uint64_t host_off, uint64_t count) {
  CO_RETURN_IF_ERROR(co_await update_refcounts(host_off >> cluster_bits_, count, -1));
  co_return Status{};
}

}  // namespace img::qcow2
