// write_zeroes and discard.
//
// Whole clusters change their mapping: discard makes them unallocated (their host clusters are
// hole-punched, then freed); write_zeroes on version 3 sets the zero flag (keeping the host
// cluster unless the caller allows unmapping); version 2 has no zero flag, so allocated clusters
// get zero bytes written. Partial clusters at the edges: write_zeroes writes zero bytes, discard
// leaves them alone (it is advisory).
#include "qcow2/driver.h"

namespace img::qcow2 {

Task<Status> Qcow2Image::discard(uint64_t off, uint64_t len) {
  co_return co_await zero_or_discard(off, len, true, true);
}

Task<Status> Qcow2Image::write_zeroes(uint64_t off, uint64_t len, WriteZeroesFlags flags) {
  co_return co_await zero_or_discard(off, len, false, flags.may_unmap);
}

Task<Status> Qcow2Image::make_empty() {
  // qemu's qcow2_make_empty: a full discard of the whole image (every entry unallocated, zero
  // flags included, L2 tables shared with a snapshot copied first), then the file cut after the
  // last cluster still in use.
  // Only the ranges that have an L2 table hold anything: the cost follows the tables, not the
  // virtual size (a 1 TiB overlay has 2048 L1 entries and maybe one table).
  const uint64_t span = l2_entries_ << cluster_bits_;
  for (uint64_t i = 0; i < l1_.size(); ++i) {
    if ((l1_[i] & kL1OffsetMask) == 0 || i * span >= h_.size) continue;
    uint64_t off = i * span;
    uint64_t len = std::min(span, h_.size - off);
    CO_RETURN_IF_ERROR(co_await zero_or_discard(off, len, true, true, /*full=*/true));
  }
  co_return co_await truncate_unused_tail();
}

Task<Status> Qcow2Image::zero_or_discard(uint64_t off, uint64_t len, bool discard, bool may_unmap,
                                         bool full) {
  CO_RETURN_IF_ERROR(check_writable(discard ? "discard" : "write-zeroes"));
  CO_RETURN_IF_ERROR(check_range(discard ? "discard" : "write-zeroes", off, len));
  if (len == 0) co_return Status{};
  CO_RETURN_IF_ERROR(co_await mark_bitmaps_before_change());
  CO_RETURN_IF_ERROR(co_await mark_dirty_if_lazy());
  uint64_t first_full = align_up(off, cluster_size_);
  // The last cluster of an image whose size is not cluster aligned counts as whole at the end.
  uint64_t end = off + len;
  uint64_t last_full =
      end == h_.size ? align_up(end, cluster_size_) : align_down(end, cluster_size_);
  // Edges (partial clusters): write_zeroes writes zero bytes through the write path, discard
  // leaves them alone. With extended L2 their whole subclusters get zero bits instead (QEMU's
  // zero_l2_subclusters), and only the bytes of partial subclusters are written.
  const uint64_t head_end = std::min(end, first_full);
  const uint64_t tail_start = std::max(std::max(off, last_full), head_end);
  std::vector<uint8_t> zeros;
  auto edge = [&](uint64_t a, uint64_t b) -> Task<Status> {
    uint64_t sa = b, sb = b;  // the whole subclusters of [a, b)
    if (extended_) {
      sa = std::min(b, align_up(a, sc_size_));
      sb = b == h_.size ? b : std::max(sa, align_down(b, sc_size_));
    }
    if (sa < sb) {
      const uint64_t cstart = align_down(a, cluster_size_);
      bool fallback = false;
      CO_RETURN_IF_ERROR(co_await zero_subclusters(
          cluster_index(a), static_cast<unsigned>((sa - cstart) >> sc_bits_),
          static_cast<unsigned>(div_round_up(sb - cstart, sc_size_)), discard, &fallback));
      if (fallback) {
        // A compressed cluster has no subclusters: zero bytes instead, for a discard too (so
        // that whole discarded subclusters always read as zeros, as elsewhere).
        zeros.assign(cluster_size_, 0);
        CO_RETURN_IF_ERROR(co_await write(sa, zeros.data(), sb - sa));
      }
    }
    if (discard) co_return Status{};
    if (zeros.empty()) zeros.assign(cluster_size_, 0);
    if (sa > a) CO_RETURN_IF_ERROR(co_await write(a, zeros.data(), sa - a));
    if (b > sb) CO_RETURN_IF_ERROR(co_await write(sb, zeros.data(), b - sb));
    co_return Status{};
  };
  if (!discard || extended_) {
    if (head_end > off) CO_RETURN_IF_ERROR(co_await edge(off, head_end));
    if (end > tail_start && last_full < end) CO_RETURN_IF_ERROR(co_await edge(tail_start, end));
  }
  if (last_full <= first_full) co_return Status{};
  // A raw data file must read as the disk does: the zeros go into it too (QEMU's
  // qcow2_subcluster_zeroize), under the cluster locks with the L2 entries that record them, so
  // a concurrent write lands before or after both.
  const bool zero_data_file = data_file_raw() && !discard;

  uint64_t gc = cluster_index(first_full);
  uint64_t gc_end = div_round_up(last_full, cluster_size_);
  std::vector<HostRun> freed;
  std::vector<uint64_t> cow_zero;  // v2: shared clusters that get zeros through the write path
  while (gc < gc_end) {
    uint64_t n = std::min(gc_end - gc, l2_entries_ - l2_index(gc));
    auto guard = co_await cluster_locks_.lock(gc, n, true);
    if (zero_data_file) {
      const uint64_t at = gc << cluster_bits_;
      CO_RETURN_IF_ERROR(
          co_await data_file_->write_zeroes(at, std::min((gc + n) << cluster_bits_, h_.size) - at));
    }
    // Over a backing image, zeros must hide its data: zero flags on version 3 (in an L2 table
    // allocated for them if need be), zero bytes through the write path on version 2. A v2
    // discard lets the backing data show through, as QEMU's does (discard is advisory).
    // A full discard (make_empty) wants the backing data to show through.
    bool hide = backing_covers(gc << cluster_bits_) && !(discard && h_.version < 3) && !full;
    CO_ASSIGN_OR_RETURN(auto l2, co_await get_l2(l1_index(gc), hide && h_.version >= 3));
    if (!l2) {  // no L2 table: unallocated
      for (uint64_t k = 0; hide && k < n; ++k) {
        if (backing_covers((gc + k) << cluster_bits_)) cow_zero.push_back(gc + k);
      }
      gc += n;
      continue;
    }
    if (!(l1_[l1_index(gc)] & kOflagCopied)) {
      // The L2 table is shared with a snapshot: changing it in place would change the snapshot.
      // Discard is advisory, so it leaves the range alone; zeroing needs a copy of the table.
      if (discard && !full) {
        gc += n;
        continue;
      }
      CO_ASSIGN_OR_RETURN(l2, co_await get_l2(l1_index(gc), /*allocate=*/true));
    }
    freed.clear();
    bool changed = false;
    for (uint64_t k = 0; k < n; ++k) {
      CO_ASSIGN_OR_RETURN(L2Entry e, decode_entry(gc + k, l2_at(l2.data(), gc + k)));
      // Every host range an entry names is checked before anything is punched or zeroed there:
      // a hostile entry pointing at a refcount block must not make discard destroy it.
      uint64_t host_len = e.kind == ClusterKind::kCompressed ? e.compressed_size
                          : e.has_host_cluster()             ? cluster_size_
                                                             : 0;
      if (host_len && !has_data_file() && overlaps_metadata(e.host_offset, host_len)) {
        co_return co_await mark_corrupt(strfmt(
            "L2 entry for guest offset 0x%llx points into "
            "metadata (host offset 0x%llx)",
            (unsigned long long)((gc + k) << cluster_bits_), (unsigned long long)e.host_offset));
      }
      RawL2 ne;
      bool release = false;
      if (!discard && h_.version < 3 && e.kind == ClusterKind::kCompressed) {
        // No zero flag to give it: zero bytes through the write path, which replaces it with a
        // normal cluster (QEMU's block layer falls back to writing zeros the same way).
        cow_zero.push_back(gc + k);
        continue;
      }
      if (discard || (h_.version >= 3 && may_unmap) || e.kind == ClusterKind::kCompressed) {
        bool zero =
            !discard || (h_.version >= 3 && !full && backing_covers((gc + k) << cluster_bits_));
        ne = zero ? encode_zero(0, false, extended_) : RawL2{};
        release = host_len != 0;
      } else if (h_.version >= 3) {
        if (e.kind == ClusterKind::kUnallocated) {
          // Reads as zeros already unless a backing image lies behind it.
          ne = backing_covers((gc + k) << cluster_bits_) ? encode_zero(0, false, extended_)
                                                         : e.raw_l2();
        } else {
          // Keep the allocation ("zero, allocated"), and its COPIED flag.
          ne = encode_zero(e.has_host_cluster() ? e.host_offset : 0, e.copied, extended_);
        }
      } else {
        // Version 2: no zero flag. Clusters of our own get zero bytes in place; shared ones go
        // through the write path (copy-on-write) once the locks are released.
        if (e.writable_in_place()) {
          CO_RETURN_IF_ERROR(co_await file_->write_zeroes(e.host_offset, cluster_size_));
        } else if (e.kind == ClusterKind::kNormal || (e.kind == ClusterKind::kUnallocated &&
                                                      backing_covers((gc + k) << cluster_bits_))) {
          cow_zero.push_back(gc + k);
        }
        continue;
      }
      if (release && has_data_file()) {
        // No refcounts there; the cluster lock keeps a writer from mapping it again meanwhile.
        if (!zero_data_file)
          CO_RETURN_IF_ERROR(co_await release_data(e.host_offset, cluster_size_));
      } else if (release) {
        freed.push_back(host_run_of(e));
      }
      if (ne != e.raw_l2()) {
        set_l2_at(l2.data(), gc + k, ne);
        changed = true;
      }
    }
    if (changed) l2_cache_->mark_dirty(l2);
    if (!freed.empty()) {
      // The L2 update reaches the file before the refcounts drop.
      if (!lazy_) CO_RETURN_IF_ERROR(co_await refcount_cache_->set_dependency(l2_cache_.get()));
      auto alloc_guard = co_await alloc_mu_.lock();
      for (const HostRun& r : freed) CO_RETURN_IF_ERROR(co_await release_clusters(r, true));
    }
    gc += n;
  }
  if (!cow_zero.empty()) {
    std::vector<uint8_t> zeros(cluster_size_, 0);
    for (uint64_t c : cow_zero) {
      uint64_t at = c << cluster_bits_;
      CO_RETURN_IF_ERROR(co_await write(at, zeros.data(), std::min(cluster_size_, h_.size - at)));
    }
  }
  co_return Status{};
}

Task<Status> Qcow2Image::zero_subclusters(uint64_t gc, unsigned s0, unsigned s1, bool discard,
                                          bool* fallback) {
  *fallback = false;
  auto guard = co_await cluster_locks_.lock(gc, 1, true);
  if (data_file_raw()) {
    const uint64_t at = (gc << cluster_bits_) + (uint64_t{s0} << sc_bits_);
    const uint64_t to = std::min(h_.size, (gc << cluster_bits_) + (uint64_t{s1} << sc_bits_));
    if (to > at) CO_RETURN_IF_ERROR(co_await data_file_->write_zeroes(at, to - at));
  }
  // As for whole clusters: zeros must hide a backing image (zero bits in an L2 table allocated
  // for them if need be); a table shared with a snapshot is copied first, or left alone by a
  // discard.
  const bool hide = backing_covers(gc << cluster_bits_);
  CO_ASSIGN_OR_RETURN(auto l2, co_await get_l2(l1_index(gc), hide));
  if (!l2) co_return Status{};  // unallocated, nothing behind it: zeros already
  if (!(l1_[l1_index(gc)] & kOflagCopied)) {
    if (discard) co_return Status{};
    CO_ASSIGN_OR_RETURN(l2, co_await get_l2(l1_index(gc), /*allocate=*/true));
  }
  CO_ASSIGN_OR_RETURN(L2Entry e, decode_entry(gc, l2_at(l2.data(), gc)));
  if (e.kind == ClusterKind::kCompressed) {
    // "Compressed clusters don't have subclusters": the caller writes zero bytes (QEMU's block
    // layer falls back the same way when zero_l2_subclusters refuses).
    *fallback = true;
    co_return Status{};
  }
  if (e.kind == ClusterKind::kUnallocated && !hide) co_return Status{};
  const RawL2 ne{e.raw, (e.bitmap | zero_range(s0, s1)) & ~alloc_range(s0, s1)};
  if (ne == e.raw_l2()) co_return Status{};
  set_l2_at(l2.data(), gc, ne);
  l2_cache_->mark_dirty(l2);
  co_return Status{};
}

}  // namespace img::qcow2
