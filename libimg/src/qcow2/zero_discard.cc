// write_zeroes, discard and block_status.
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

Task<Status> Qcow2Image::zero_or_discard(uint64_t off, uint64_t len, bool discard,
                                         bool may_unmap) {
  CO_RETURN_IF_ERROR(check_writable(discard ? "discard" : "write-zeroes"));
  CO_RETURN_IF_ERROR(check_range(discard ? "discard" : "write-zeroes", off, len));
  if (len == 0) co_return Status{};
  CO_RETURN_IF_ERROR(co_await mark_dirty_if_lazy());
  uint64_t first_full = align_up(off, cluster_size_);
  // The last cluster of an image whose size is not cluster aligned counts as whole at the end.
  uint64_t end = off + len;
  uint64_t last_full = end == h_.size ? align_up(end, cluster_size_) : align_down(end, cluster_size_);
  if (!discard) {
    // Edges: zero bytes through the normal write path.
    uint64_t head_end = std::min(end, first_full);
    uint64_t tail_start = std::max(std::max(off, last_full), head_end);
    std::vector<uint8_t> zeros;
    if (head_end > off || (end > tail_start && tail_start >= last_full)) {
      zeros.assign(cluster_size_, 0);
    }
    if (head_end > off) CO_RETURN_IF_ERROR(co_await write(off, zeros.data(), head_end - off));
    if (end > tail_start && last_full < end) {
      CO_RETURN_IF_ERROR(co_await write(tail_start, zeros.data(), end - tail_start));
    }
  }
  if (last_full <= first_full) co_return Status{};

  uint64_t gc = cluster_index(first_full);
  uint64_t gc_end = div_round_up(last_full, cluster_size_);
  std::vector<uint64_t> freed;
  while (gc < gc_end) {
    uint64_t n = std::min(gc_end - gc, l2_entries_ - l2_index(gc));
    auto guard = co_await cluster_locks_.lock(gc, n, true);
    CO_ASSIGN_OR_RETURN(auto l2, co_await get_l2(l1_index(gc), false));
    if (!l2) {  // no L2 table: unallocated, reads as zeros already (no backing files yet)
      gc += n;
      continue;
    }
    freed.clear();
    bool changed = false;
    for (uint64_t k = 0; k < n; ++k) {
      uint8_t* p = l2.data() + (l2_index(gc) + k) * 8;
      uint64_t e = load_be64(p);
      if (e & kOflagCompressed) {
        co_return not_supported(strfmt("%s: %s of a compressed cluster is not supported yet",
                                       file_->name().c_str(),
                                       discard ? "discard" : "write-zeroes"));
      }
      CO_RETURN_IF_ERROR(check_data_entry(gc + k, e));
      uint64_t host = e & kL2OffsetMask;
      uint64_t ne;
      if (discard || (h_.version >= 3 && may_unmap)) {
        ne = discard ? 0 : kOflagZero;
        if (host) freed.push_back(host);
      } else if (h_.version >= 3) {
        if (e == 0) {
          ne = 0;  // unallocated without a backing file already reads as zeros
        } else if (host) {
          ne = host | kOflagZero | (e & kOflagCopied);  // keep the allocation: "zero, allocated"
        } else {
          ne = kOflagZero;
        }
      } else {
        // Version 2: no zero flag. Allocated clusters get zero bytes.
        if (host) {
          CO_RETURN_IF_ERROR(co_await file_->write_zeroes(host, cluster_size_));
        }
        continue;
      }
      if (ne != e) {
        store_be64(p, ne);
        changed = true;
      }
    }
    if (changed) l2_cache_->mark_dirty(l2);
    if (!freed.empty()) {
      // The host clusters are still ours: punch them now, before anyone can reuse them.
      for (uint64_t h : freed) CO_RETURN_IF_ERROR(co_await file_->discard(h, cluster_size_));
      if (!lazy_) CO_RETURN_IF_ERROR(co_await refcount_cache_->set_dependency(l2_cache_.get()));
      auto alloc_guard = co_await alloc_mu_.lock();
      for (uint64_t h : freed) CO_RETURN_IF_ERROR(co_await free_clusters(h, 1));
    }
    gc += n;
  }
  co_return Status{};
}

Task<Result<BlockStatus>> Qcow2Image::block_status(uint64_t off, uint64_t len) {
  if (closed_) co_return invalid_argument("block-status after close");
  CO_RETURN_IF_ERROR(check_range("block-status", off, len));
  BlockStatus st;
  if (len == 0) co_return st;
  uint64_t gc = cluster_index(off);
  uint64_t in = off & (cluster_size_ - 1);
  uint64_t n = std::min(div_round_up(in + len, cluster_size_), l2_entries_ - l2_index(gc));
  std::vector<uint64_t> entries;
  CO_RETURN_IF_ERROR(co_await lookup(gc, n, entries));
  auto kind_of = [&](uint64_t e) {
    if (e & kOflagCompressed) return BlockStatus::Kind::kData;
    if (e & kOflagZero) return BlockStatus::Kind::kZero;
    if ((e & kL2OffsetMask) == 0) return BlockStatus::Kind::kUnallocated;
    return BlockStatus::Kind::kData;
  };
  st.kind = kind_of(entries[0]);
  st.compressed = entries[0] & kOflagCompressed;
  uint64_t host = entries[0] & kL2OffsetMask;
  if (st.kind == BlockStatus::Kind::kData && !st.compressed) st.host_offset = host + in;
  uint64_t k = 1;
  for (; k < n; ++k) {
    uint64_t e = entries[k];
    if (kind_of(e) != st.kind || bool(e & kOflagCompressed) != st.compressed) break;
    if (st.host_offset && (e & kL2OffsetMask) != host + k * cluster_size_) break;
    if (st.compressed) break;
  }
  st.length = std::min(len, k * cluster_size_ - in);
  co_return st;
}

}  // namespace img::qcow2
