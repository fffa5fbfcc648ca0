// Resize of a qcow2 image. QEMU's qcow2_co_truncate and qcow2_grow_l1_table (block/qcow2.c,
// block/qcow2-cluster.c) are the reference for what happens and in which order.
//
// Grow: when the new size needs more L1 entries than the table holds (spec "Cluster mapping":
// each L1 entry maps one L2 table's worth of guest bytes), a larger table is allocated and
// written, and it and its refcounts are flushed before the header points at it (l1_size and
// l1_table_offset are adjacent header fields, switched by one 12-byte write, then flushed); only
// then are the old table's clusters freed. A crash leaves either the old table (the new one
// leaked) or the new one (the old one leaked). Preallocation maps the new clusters next, in the
// driver's usual order: refcounts, then data (zeros), then L2 entries. The size field is written
// last, after everything else is durable, so a crash before it leaves the old size over valid
// tables. Over a backing file longer than the old size, the grown part gets zero clusters
// before the size changes, so the backing file's data never shows there (as QEMU 7.2 does).
//
// Shrink: the guest clusters wholly past the new end are unmapped (L2 entries cleared before
// their refcounts drop), the L1 entries past the new end are cleared on disk before their L2
// tables are freed, the size is written, and the file is cut after its last used cluster.
// l1_size keeps its value, as QEMU leaves it.
#include <algorithm>
#include <unordered_set>

#include "qcow2/driver.h"

namespace img::qcow2 {

namespace {
// Header fields (spec "Header"): size at byte 24; l1_size (4 bytes) at 36, followed by
// l1_table_offset (8 bytes) at 40.
constexpr uint64_t kOffSize = 24;
constexpr uint64_t kOffL1Size = 36;
// Sizes are counted in 512-byte sectors (QEMU's BDRV_SECTOR_SIZE); qemu refuses others.
constexpr uint64_t kSectorSize = 512;

bool all_zero(const std::vector<uint8_t>& b) {
  return std::all_of(b.begin(), b.end(), [](uint8_t c) { return c == 0; });
}
}  // namespace

Task<Status> Qcow2Image::resize(uint64_t new_size, const ResizeOptions& opts) {
  CO_RETURN_IF_ERROR(check_writable("resize"));
  CO_RETURN_IF_ERROR(co_await mark_bitmaps_before_change());
  if (!is_aligned(new_size, kSectorSize)) {
    co_return invalid_argument("The new size must be a multiple of 512");
  }
  if (h_.nb_snapshots > 0) {
    // Version 2 images do not record each snapshot's size, so QEMU refuses them; version 3
    // ones would need L2 tables shared with snapshots left alone, which this driver cannot
    // write yet (it does not open such images read/write either).
    if (h_.version < 3) co_return not_supported("Can't resize a v2 image which has snapshots");
    co_return not_supported(file_->name() +
                            ": resizing images with internal snapshots is not "
                            "supported yet");
  }
  uint64_t old = h_.size;
  if (new_size == old) co_return Status{};
  if (new_size < old) {
    if (opts.preallocation != Preallocation::kOff) {
      co_return invalid_argument("Preallocation can't be used for shrinking an image");
    }
    co_return co_await shrink(new_size, opts.allow_shrink);
  }
  uint64_t l1_needed = l1_entries_for(h_, new_size);
  if (l1_needed * 8 > kMaxL1Bytes) {
    // qemu-img's words (-EFBIG from qcow2_grow_l1_table); QCOW_MAX_L1_SIZE is 32 MiB.
    co_return no_space("Failed to grow the L1 table: File too large");
  }
  // A backing file longer than the old size would show through the grown part (QEMU's
  // bdrv_co_truncate then asks for BDRV_REQ_ZERO_WRITE, and qcow2_co_truncate zeroes the
  // part: zero clusters, zero bytes in the cluster the old end lies in).
  const bool hide_backing = backing_ && backing_->size() > old;
  if (hide_backing && h_.version < 3 && new_size > align_up(old, cluster_size_)) {
    // Version 2 has no zero clusters; QEMU 7.2 refuses (qcow2_subcluster_zeroize: -ENOTSUP)
    // rather than write the whole grown part as data, and so do we, in its words.
    co_return not_supported("Failed to zero out new clusters: Operation not supported");
  }
  CO_RETURN_IF_ERROR(co_await mark_dirty_if_lazy());
  if (has_data_file()) {
    // As QEMU's qcow2_co_truncate: the data file follows the virtual size (a raw one is the
    // disk), before the tables map the new part.
    CO_ASSIGN_OR_RETURN(uint64_t data_size, data_file_->size());
    if (data_size < new_size) CO_RETURN_IF_ERROR(co_await data_file_->truncate(new_size));
  }
  CO_RETURN_IF_ERROR(co_await grow_l1(l1_needed));
  {
    // A compressed cluster straddling the old end is zeroed through the write path, whose range
    // check needs the new size; the header keeps the old one until commit_size.
    h_.size = new_size;
    Status s = co_await zero_partial_tail(old, new_size);
    h_.size = old;
    CO_RETURN_IF_ERROR(s);
  }
  // A raw data file stays fully mapped, as qemu-img resize leaves it.
  const Preallocation prealloc = opts.preallocation == Preallocation::kOff && data_file_raw()
                                     ? Preallocation::kMetadata
                                     : opts.preallocation;
  if (prealloc != Preallocation::kOff) {
    CO_RETURN_IF_ERROR(co_await preallocate(old, new_size, prealloc));
  }
  if (hide_backing) CO_RETURN_IF_ERROR(co_await zero_grown_part(old, new_size, opts.preallocation));
  co_return co_await commit_size(new_size);
}

Task<Status> Qcow2Image::zero_grown_part(uint64_t old, uint64_t new_size, Preallocation mode) {
  // Preallocation maps every whole new cluster to zeros already, and leaves the cluster that
  // straddles the old end unallocated over a backing file (see preallocate): only its part past
  // the old end needs zeros then.
  uint64_t end =
      mode == Preallocation::kOff ? new_size : std::min(new_size, align_up(old, cluster_size_));
  if (end <= old) co_return Status{};
  // The write path checks ranges against the size; the header keeps the old one until
  // commit_size, after these zeros are durable, so a crash leaves the old size.
  h_.size = new_size;
  Status s = co_await write_zeroes(old, end - old, {});
  if (!s) h_.size = old;
  co_return s;
}

Task<Status> Qcow2Image::commit_size(uint64_t new_size) {
  // Every table change is durable before the header says the size changed.
  CO_RETURN_IF_ERROR(co_await flush());
  uint8_t buf[8];
  store_be64(buf, new_size);
  {
    auto guard = co_await header_mu_.lock();
    CO_RETURN_IF_ERROR(co_await file_->write(kOffSize, buf, sizeof buf));
    CO_RETURN_IF_ERROR(co_await file_->flush());
  }
  h_.size = new_size;
  co_return Status{};
}

Task<Status> Qcow2Image::grow_l1(uint64_t entries) {
  if (entries <= l1_.size()) co_return Status{};
  uint64_t clusters = div_round_up(entries * 8, cluster_size_);
  uint64_t off;
  {
    auto guard = co_await alloc_mu_.lock();
    CO_ASSIGN_OR_RETURN(off, co_await alloc_clusters(clusters));
  }
  // Whole clusters, zero-padded: entries past the old table are zero (unallocated).
  std::vector<uint8_t> raw(clusters * cluster_size_, 0);
  for (uint64_t i = 0; i < l1_.size(); ++i) store_be64(&raw[i * 8], l1_[i]);
  CO_RETURN_IF_ERROR(co_await file_->write(off, raw.data(), raw.size()));
  // The new table and the refcounts that mark its clusters used are on disk before the header
  // points at it.
  CO_RETURN_IF_ERROR(co_await refcount_cache_->flush());
  uint64_t rcn = refcount_cache_->written_count();
  CO_RETURN_IF_ERROR(co_await file_->flush());
  refcount_cache_->synced_up_to(rcn);
  uint8_t hdr[12];
  store_be32(hdr, static_cast<uint32_t>(entries));
  store_be64(hdr + 4, off);
  {
    auto guard = co_await header_mu_.lock();
    CO_RETURN_IF_ERROR(co_await file_->write(kOffL1Size, hdr, sizeof hdr));
    CO_RETURN_IF_ERROR(co_await file_->flush());
  }
  uint64_t old_off = h_.l1_table_offset;
  uint64_t old_entries = l1_.size();
  h_.l1_table_offset = off;
  h_.l1_size = static_cast<uint32_t>(entries);
  l1_.resize(entries, 0);
  if (old_entries > 0) {
    // Nothing references the old table any more; a crash before this refcount drop reaches the
    // file leaks its clusters, nothing worse.
    auto guard = co_await alloc_mu_.lock();
    CO_RETURN_IF_ERROR(
        co_await free_clusters(old_off, div_round_up(old_entries * 8, cluster_size_)));
  }
  co_return Status{};
}

Task<Status> Qcow2Image::zero_partial_tail(uint64_t old, uint64_t new_size) {
  // A cluster that straddled the old end keeps whatever bytes lay past it (an earlier shrink to
  // a size inside the cluster leaves the old data there): the grown part must read as zeros.
  // QEMU 7.2 leaves them readable; zeroing costs one small write.
  if (is_aligned(old, cluster_size_)) co_return Status{};
  uint64_t gc = cluster_index(old);
  std::vector<RawL2> entries;
  CO_RETURN_IF_ERROR(co_await lookup(gc, 1, entries));
  CO_ASSIGN_OR_RETURN(L2Entry e, decode_entry(gc, entries[0]));
  uint64_t in = old & (cluster_size_ - 1);
  uint64_t len = std::min(cluster_size_ - in, new_size - old);
  if (e.kind == ClusterKind::kCompressed || (extended_ && e.kind == ClusterKind::kNormal)) {
    // Its old bytes lie in the compressed stream (or, with extended L2, in subclusters that
    // may be data, zeros or unallocated, each needing its own treatment): the write path turns it
    // into a normal cluster with zeros there. REQUIRES h_.size == new_size (the range check).
    co_return co_await zero_or_discard(old, len, /*discard=*/false, /*may_unmap=*/false);
  }
  if (e.kind != ClusterKind::kNormal) co_return Status{};  // zero, unallocated: reads as zeros
  if (!e.copied) {
    co_return not_supported(file_->name() +
                            ": growing an image whose last cluster is shared "
                            "with a snapshot is not supported yet");
  }
  if (!has_data_file() && overlaps_metadata(e.host_offset, cluster_size_)) {
    co_return co_await mark_corrupt(
        strfmt("L2 entry for guest offset 0x%llx points into "
               "metadata (host offset 0x%llx)",
               (unsigned long long)(gc << cluster_bits_), (unsigned long long)e.host_offset));
  }
  co_return co_await data_io().write_zeroes(e.host_offset + in, len);
}

Task<Status> Qcow2Image::prepare_prealloc_data(uint64_t host, uint64_t len, uint64_t old_file_end,
                                               Preallocation mode) {
  if (mode == Preallocation::kFull) {
    // Real zeros, so every block of the file is allocated.
    constexpr uint64_t kChunk = 1 << 20;
    std::vector<uint8_t> zeros(std::min(kChunk, len), 0);
    for (uint64_t o = 0; o < len; o += kChunk) {
      CO_RETURN_IF_ERROR(
          co_await data_io().write(host + o, zeros.data(), std::min(kChunk, len - o)));
    }
    co_return Status{};
  }
  // Clusters reused from freed space inside the file may hold old bytes; past the old end of the
  // file they read as zeros already.
  if (host < old_file_end) {
    CO_RETURN_IF_ERROR(co_await data_io().write_zeroes(host, std::min(len, old_file_end - host)));
  }
  if (mode == Preallocation::kFalloc) CO_RETURN_IF_ERROR(co_await data_io().allocate(host, len));
  co_return Status{};
}

Task<Status> Qcow2Image::preallocate(uint64_t from, uint64_t to, Preallocation mode) {
  uint64_t gc = cluster_index(from);
  // The head of a cluster straddling the old end would read from the backing file if it stayed
  // unallocated; leave such a cluster to the write path.
  if (!is_aligned(from, cluster_size_) && !h_.backing_file.empty()) ++gc;
  const uint64_t gc_end = div_round_up(to, cluster_size_);
  CO_ASSIGN_OR_RETURN(const uint64_t old_file_end, data_io().size());
  uint64_t mapped_end = 0;
  std::vector<uint64_t> todo;
  while (gc < gc_end) {
    uint64_t n = std::min(gc_end - gc, l2_entries_ - l2_index(gc));
    CO_ASSIGN_OR_RETURN(auto l2, co_await get_l2(l1_index(gc), true));
    todo.clear();
    for (uint64_t k = 0; k < n; ++k) {
      CO_ASSIGN_OR_RETURN(L2Entry e, decode_entry(gc + k, l2_at(l2.data(), gc + k)));
      if (e.kind == ClusterKind::kUnallocated || e.kind == ClusterKind::kZeroPlain) {
        todo.push_back(k);
      }
    }
    if (!todo.empty()) {
      // The host clusters of todo[i]: new contiguous ones in the qcow2 file, or in a data file
      // the guest offsets themselves, prepared run by run.
      std::vector<uint64_t> hosts(todo.size());
      if (has_data_file()) {
        for (size_t i = 0; i < todo.size(); ++i) hosts[i] = (gc + todo[i]) << cluster_bits_;
      } else {
        auto guard = co_await alloc_mu_.lock();
        CO_ASSIGN_OR_RETURN(hosts[0], co_await alloc_clusters(todo.size()));
        for (size_t i = 1; i < todo.size(); ++i) hosts[i] = hosts[0] + i * cluster_size_;
      }
      for (size_t i = 0; i < todo.size();) {
        size_t j = i + 1;
        while (j < todo.size() && hosts[j] == hosts[i] + (j - i) * cluster_size_) ++j;
        const uint64_t len = (j - i) * cluster_size_;
        CO_RETURN_IF_ERROR(co_await prepare_prealloc_data(hosts[i], len, old_file_end, mode));
        mapped_end = std::max(mapped_end, hosts[i] + len);
        i = j;
      }
      // Refcounts before the entries that use them; the zeros durable before the entries too.
      if (!lazy_ && !has_data_file())
        CO_RETURN_IF_ERROR(co_await l2_cache_->set_dependency(refcount_cache_.get()));
      l2_cache_->set_depends_on_flush();
      for (size_t i = 0; i < todo.size(); ++i) {
        // With extended L2 and no backing file the bitmap stays as it was (preallocated
        // subclusters read zeros as before, as QEMU's preallocation leaves them). Over a backing
        // file "unallocated" would show its data: the zeros prepared above become the data.
        const uint64_t g = gc + todo[i];
        const RawL2 ne{encode_normal(hosts[i], /*copied=*/true).entry,
                       h_.backing_file.empty() ? l2_at(l2.data(), g).bitmap : kBitmapAllAlloc};
        set_l2_at(l2.data(), g, ne);
      }
      l2_cache_->mark_dirty(l2);
    }
    gc += n;
  }
  // As QEMU's preallocate_co: the file covers every cluster an entry maps (metadata mode leaves
  // them as a hole at the end of the file). A data file ends at the virtual size instead.
  if (has_data_file()) co_return Status{};
  CO_ASSIGN_OR_RETURN(uint64_t file_end, file_->size());
  if (mapped_end > file_end) CO_RETURN_IF_ERROR(co_await file_->truncate(mapped_end));
  co_return Status{};
}

Task<Status> Qcow2Image::refuse_shrink_over_data(uint64_t new_size) {
  const uint64_t old = h_.size;
  uint64_t gc = cluster_index(new_size);
  const uint64_t gc_end = div_round_up(old, cluster_size_);
  std::vector<RawL2> entries;
  while (gc < gc_end) {
    uint64_t n = std::min(gc_end - gc, l2_entries_ - l2_index(gc));
    CO_RETURN_IF_ERROR(co_await lookup(gc, n, entries));
    for (uint64_t k = 0; k < n; ++k) {
      CO_ASSIGN_OR_RETURN(L2Entry e, decode_entry(gc + k, entries[k]));
      if (e.kind != ClusterKind::kNormal && e.kind != ClusterKind::kCompressed) continue;
      uint64_t start = std::max(new_size, (gc + k) << cluster_bits_);
      uint64_t end = std::min(old, (gc + k + 1) << cluster_bits_);
      // A cluster that straddles the new end holds data past it only if those bytes are not
      // zero; whole clusters past the end count as data once allocated.
      if (start != (gc + k) << cluster_bits_) {
        std::vector<uint8_t> buf(end - start);
        CO_RETURN_IF_ERROR(co_await read(start, buf.data(), buf.size()));
        if (all_zero(buf)) continue;
      }
      co_return invalid_argument(
          strfmt("%s: shrinking to %llu bytes would drop the data at "
                 "guest offset 0x%llx (allow the shrink to drop it)",
                 file_->name().c_str(), (unsigned long long)new_size, (unsigned long long)start));
    }
    gc += n;
  }
  co_return Status{};
}

Task<Status> Qcow2Image::shrink(uint64_t new_size, bool allow_data_loss) {
  if (!allow_data_loss) CO_RETURN_IF_ERROR(co_await refuse_shrink_over_data(new_size));
  CO_RETURN_IF_ERROR(co_await mark_dirty_if_lazy());
  // Clusters wholly past the new end lose their mapping (QEMU: qcow2_cluster_discard with
  // full_discard, from ROUND_UP(new_size, cluster_size)).
  uint64_t gc = cluster_index(align_up(new_size, cluster_size_));
  const uint64_t gc_end = div_round_up(h_.size, cluster_size_);
  std::vector<HostRun> freed;
  while (gc < gc_end) {
    uint64_t n = std::min(gc_end - gc, l2_entries_ - l2_index(gc));
    CO_ASSIGN_OR_RETURN(auto l2, co_await get_l2(l1_index(gc), false));
    if (!l2) {
      gc += n;
      continue;
    }
    freed.clear();
    bool changed = false;
    for (uint64_t k = 0; k < n; ++k) {
      CO_ASSIGN_OR_RETURN(L2Entry e, decode_entry(gc + k, l2_at(l2.data(), gc + k)));
      if (e.raw_l2() == RawL2{}) continue;
      uint64_t host_len = e.kind == ClusterKind::kCompressed ? e.compressed_size
                          : e.has_host_cluster()             ? cluster_size_
                                                             : 0;
      // A hostile entry pointing at metadata must not make the shrink punch a hole in it.
      if (host_len && !has_data_file() && overlaps_metadata(e.host_offset, host_len)) {
        co_return co_await mark_corrupt(strfmt(
            "L2 entry for guest offset 0x%llx points into "
            "metadata (host offset 0x%llx)",
            (unsigned long long)((gc + k) << cluster_bits_), (unsigned long long)e.host_offset));
      }
      if (host_len && has_data_file()) {
        CO_RETURN_IF_ERROR(co_await release_data(e.host_offset, cluster_size_));
      } else if (host_len) {
        freed.push_back(host_run_of(e));
      }
      set_l2_at(l2.data(), gc + k, RawL2{});
      changed = true;
    }
    if (changed) l2_cache_->mark_dirty(l2);
    if (!freed.empty()) {
      // The cleared entries reach the file before the refcounts drop.
      if (!lazy_) CO_RETURN_IF_ERROR(co_await refcount_cache_->set_dependency(l2_cache_.get()));
      auto guard = co_await alloc_mu_.lock();
      for (const HostRun& r : freed) CO_RETURN_IF_ERROR(co_await release_clusters(r, true));
    }
    gc += n;
  }
  CO_RETURN_IF_ERROR(co_await shrink_l1(l1_entries_for(h_, new_size)));
  CO_RETURN_IF_ERROR(co_await commit_size(new_size));
  // As QEMU's qcow2_co_truncate: the data file follows the virtual size.
  if (has_data_file()) CO_RETURN_IF_ERROR(co_await data_file_->truncate(new_size));
  co_return co_await truncate_unused_tail();
}

Task<Status> Qcow2Image::shrink_l1(uint64_t keep) {
  // As QEMU's qcow2_shrink_l1_table: the entries past `keep` are zeroed on disk (and flushed)
  // before the L2 tables they named are freed; l1_size itself stays.
  std::vector<uint64_t> tables;
  std::unordered_set<uint64_t> kept;
  for (uint64_t i = 0; i < l1_.size(); ++i) {
    CO_ASSIGN_OR_RETURN(uint64_t off, l2_offset_from_l1(i));
    if (off == 0) continue;
    if (i < keep) {
      kept.insert(off);
    } else {
      tables.push_back(off);
    }
  }
  if (tables.empty()) co_return Status{};
  for (uint64_t off : tables) {
    if (kept.count(off)) {
      // Freeing it would hand a live table out again.
      co_return co_await mark_corrupt(
          strfmt("L2 table at 0x%llx is named by L1 entries on "
                 "both sides of the new end",
                 (unsigned long long)off));
    }
  }
  // The tables hold only cleared entries now; writing them back first means no dirty copy of a
  // freed table can reach its clusters after they are reused.
  CO_RETURN_IF_ERROR(co_await flush());
  std::vector<uint8_t> zeros((l1_.size() - keep) * 8, 0);
  CO_RETURN_IF_ERROR(
      co_await file_->write(h_.l1_table_offset + keep * 8, zeros.data(), zeros.size()));
  CO_RETURN_IF_ERROR(co_await file_->flush());
  std::fill(l1_.begin() + static_cast<std::ptrdiff_t>(keep), l1_.end(), 0);
  auto guard = co_await alloc_mu_.lock();
  for (uint64_t off : tables) {
    metadata_clusters_.erase(off >> cluster_bits_);
    CO_RETURN_IF_ERROR(co_await release_clusters({off >> cluster_bits_, 1}, true));
  }
  co_return Status{};
}

Task<Status> Qcow2Image::truncate_unused_tail() {
  // As QEMU (qcow2_get_last_cluster): the file ends after the last cluster with a non-zero
  // refcount. The refcounts are durable first, so no on-disk refcount counts a cluster past the
  // new end of the file.
  CO_RETURN_IF_ERROR(co_await flush());
  CO_ASSIGN_OR_RETURN(uint64_t file_size, file_->size());
  uint64_t c = div_round_up(file_size, cluster_size_);
  uint64_t used_end = 0;
  while (c > 0 && used_end == 0) {
    uint64_t b = (c - 1) / refblock_entries_;
    uint64_t off = b < reftable_.size() ? reftable_[b] & kRefTableOffsetMask : 0;
    uint64_t block_start = b * refblock_entries_;
    if (off != 0) {
      CO_RETURN_IF_ERROR(check_refblock_offset(b, off));
      CO_ASSIGN_OR_RETURN(auto ref, co_await refcount_cache_->get(off));
      for (uint64_t i = c - block_start; i > 0; --i) {
        if (get_refcount(ref.data(), i - 1, refcount_order_) != 0) {
          used_end = block_start + i;
          break;
        }
      }
    }
    c = block_start;
  }
  // Whatever the refcounts say, never cut the tables the header and the driver know of (a
  // corrupt refcount of 0 on one of them must not make us destroy it).
  uint64_t keep = std::max(used_end << cluster_bits_, cluster_size_);
  keep = std::max(keep, align_up(h_.l1_table_offset + uint64_t(h_.l1_size) * 8, cluster_size_));
  keep = std::max(keep,
                  h_.refcount_table_offset + uint64_t(h_.refcount_table_clusters) * cluster_size_);
  for (uint64_t mc : metadata_clusters_) keep = std::max(keep, (mc + 1) << cluster_bits_);
  if (keep >= file_size) co_return Status{};
  Status s = co_await file_->truncate(keep);
  if (!s) {
    Error e = std::move(s).error();
    co_return Unexpected(std::move(e.prepend(file_->name() + ": the image was resized, but "
                                                             "cutting the unused end of the file "
                                                             "failed")));
  }
  co_return co_await file_->flush();
}

}  // namespace img::qcow2
