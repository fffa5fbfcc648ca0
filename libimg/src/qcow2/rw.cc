// Guest reads and writes. Requests are cut at L2-table boundaries; inside one table, clusters
// whose host clusters are contiguous become one vectored read or write straight between the
// caller's buffers and the file.
#include <cstdlib>

#include "qcow2/driver.h"
#include "util/iov.h"

namespace img::qcow2 {

namespace {

// Page-aligned buffer (usable with O_DIRECT), freed on scope exit.
struct AlignedBuf {
  explicit AlignedBuf(uint64_t n) : size(n) {
    if (n) p = static_cast<uint8_t*>(std::aligned_alloc(4096, align_up(n, 4096)));
    if (p) std::memset(p, 0, n);
  }
  ~AlignedBuf() { std::free(p); }
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  uint8_t* p = nullptr;
  uint64_t size;
};

}  // namespace

Task<Status> Qcow2Image::readv(uint64_t off, std::span<const iovec> iov) {
  if (closed_) co_return invalid_argument("read after close");
  uint64_t len = iov_length(iov);
  CO_RETURN_IF_ERROR(check_range("read", off, len));
  IovCursor cur(iov);
  std::vector<uint64_t> entries;
  std::vector<iovec> run;
  while (len > 0) {
    uint64_t gc = cluster_index(off);
    uint64_t in = off & (cluster_size_ - 1);
    uint64_t n = std::min(div_round_up(in + len, cluster_size_), l2_entries_ - l2_index(gc));
    CO_RETURN_IF_ERROR(co_await lookup(gc, n, entries));
    uint64_t k = 0;
    while (k < n && len > 0) {
      CO_ASSIGN_OR_RETURN(L2Entry e, decode_entry(gc + k, entries[k]));
      if (e.kind == ClusterKind::kCompressed) {
        // A run of compressed clusters decompresses in parallel.
        std::vector<L2Entry> run_entries{e};
        uint64_t bytes = std::min(cluster_size_ - in, len);
        uint64_t j = k + 1;
        while (j < n && bytes < len) {
          CO_ASSIGN_OR_RETURN(L2Entry e2, decode_entry(gc + j, entries[j]));
          if (e2.kind != ClusterKind::kCompressed) break;
          run_entries.push_back(e2);
          bytes += std::min(cluster_size_, len - bytes);
          ++j;
        }
        CO_RETURN_IF_ERROR(co_await read_compressed(gc + k, run_entries, in, bytes, cur));
        off += bytes;
        len -= bytes;
        in = 0;
        k = j;
        continue;
      }
      bool data = e.kind == ClusterKind::kNormal;
      uint64_t host = e.host_offset;
      // Extend over following clusters of the same kind (and contiguous host clusters).
      uint64_t bytes = std::min(cluster_size_ - in, len);
      uint64_t j = k + 1;
      while (j < n && bytes < len) {
        CO_ASSIGN_OR_RETURN(L2Entry e2, decode_entry(gc + j, entries[j]));
        if (e2.kind == ClusterKind::kCompressed) break;
        if (e2.kind != e.kind && !(e.is_zero() && e2.is_zero())) break;
        if (data && e2.host_offset != host + (j - k) * cluster_size_) break;
        bytes += std::min(cluster_size_, len - bytes);
        ++j;
      }
      if (data) {
        run.clear();
        cur.take(bytes, run);
        CO_ASSIGN_OR_RETURN(uint64_t got, co_await file_->readv(host + in, run));
        (void)got;  // past the end of the file reads as zeros, as in QEMU
      } else if (e.kind == ClusterKind::kUnallocated) {
        CO_RETURN_IF_ERROR(co_await read_unallocated(off, bytes, cur));
      } else {
        cur.zero(bytes);  // a zero cluster: hides the backing image
      }
      off += bytes;
      len -= bytes;
      in = 0;
      k = j;
    }
  }
  co_return Status{};
}

Task<Status> Qcow2Image::read_unallocated(uint64_t off, uint64_t len, IovCursor& cur) {
  uint64_t from_backing = backing_covers(off) ? std::min(len, backing_->size() - off) : 0;
  if (from_backing > 0) {
    std::vector<iovec> run;
    cur.take(from_backing, run);
    CO_RETURN_IF_ERROR(co_await backing_->readv(off, run));
  }
  cur.zero(len - from_backing);  // past the backing image's end, or without one
  co_return Status{};
}

Task<Status> Qcow2Image::read_old_cluster(uint64_t gc, const L2Entry& e, uint8_t* buf) {
  switch (e.kind) {
    case ClusterKind::kNormal: {
      CO_ASSIGN_OR_RETURN(uint64_t got, co_await file_->read(e.host_offset, buf, cluster_size_));
      std::memset(buf + got, 0, cluster_size_ - got);  // past the end of the file: zeros
      co_return Status{};
    }
    case ClusterKind::kUnallocated: {
      iovec v{buf, cluster_size_};
      IovCursor cur(std::span<const iovec>(&v, 1));
      co_return co_await read_unallocated(gc << cluster_bits_, cluster_size_, cur);
    }
    case ClusterKind::kCompressed:
      co_return co_await read_compressed_part(gc, e, 0, buf, cluster_size_);
    case ClusterKind::kZeroPlain:
    case ClusterKind::kZeroAlloc:
      break;
  }
  std::memset(buf, 0, cluster_size_);
  co_return Status{};
}

Task<Status> Qcow2Image::writev(uint64_t off, std::span<const iovec> iov) {
  CO_RETURN_IF_ERROR(check_writable("write"));
  uint64_t len = iov_length(iov);
  CO_RETURN_IF_ERROR(check_range("write", off, len));
  CO_RETURN_IF_ERROR(co_await mark_dirty_if_lazy());
  IovCursor cur(iov);
  std::vector<iovec> part;
  while (len > 0) {
    // One L2 table's worth at a time.
    uint64_t gc = cluster_index(off);
    uint64_t in = off & (cluster_size_ - 1);
    uint64_t n = std::min(div_round_up(in + len, cluster_size_), l2_entries_ - l2_index(gc));
    uint64_t bytes = std::min(len, n * cluster_size_ - in);
    part.clear();
    cur.take(bytes, part);
    bool done = false;
    CO_RETURN_IF_ERROR(co_await write_allocated(off, part, &done));
    if (!done) CO_RETURN_IF_ERROR(co_await write_allocating(off, part));
    off += bytes;
    len -= bytes;
  }
  co_return Status{};
}

// Fast path: every cluster is allocated and ours alone (COPIED): write in place under shared
// cluster locks, so concurrent writes into one cluster overlap. Sets *done = false if the
// mapping needs changing.
Task<Status> Qcow2Image::write_allocated(uint64_t off, std::span<const iovec> iov, bool* done) {
  *done = false;
  uint64_t len = iov_length(iov);
  uint64_t gc = cluster_index(off);
  uint64_t in = off & (cluster_size_ - 1);
  uint64_t n = div_round_up(in + len, cluster_size_);
  std::vector<uint64_t> entries;
  CO_RETURN_IF_ERROR(co_await lookup(gc, n, entries));
  auto in_place = [&](uint64_t k) {
    Result<L2Entry> e = decode_entry(gc + k, entries[k]);
    return e && e->writable_in_place();
  };
  for (uint64_t k = 0; k < n; ++k) {
    if (!in_place(k)) co_return Status{};  // the slow path reports what is wrong with it
  }
  auto guard = co_await cluster_locks_.lock(gc, n, false);
  CO_RETURN_IF_ERROR(co_await lookup(gc, n, entries));  // may have changed while we waited
  for (uint64_t k = 0; k < n; ++k) {
    if (!in_place(k)) co_return Status{};
  }
  IovCursor cur(iov);
  std::vector<iovec> run;
  uint64_t k = 0;
  while (k < n) {
    uint64_t host = entries[k] & kL2OffsetMask;  // decoded above: a normal cluster
    uint64_t j = k + 1;
    while (j < n && (entries[j] & kL2OffsetMask) == host + (j - k) * cluster_size_) ++j;
    uint64_t start = k == 0 ? in : 0;
    uint64_t end_byte = std::min<uint64_t>((j - k) * cluster_size_, in + len - k * cluster_size_);
    uint64_t bytes = end_byte - start;
    if (overlaps_metadata(host + start, bytes)) {
      co_return co_await mark_corrupt(
          strfmt("L2 entry for guest offset 0x%llx points into "
                 "metadata (host offset 0x%llx)",
                 (unsigned long long)((gc + k) << cluster_bits_), (unsigned long long)host));
    }
    run.clear();
    cur.take(bytes, run);
    CO_RETURN_IF_ERROR(co_await file_->writev(host + start, run));
    k = j;
  }
  *done = true;
  co_return Status{};
}

// Slow path: some cluster needs a new host cluster (unallocated, zero, or shared). Exclusive
// cluster locks; new clusters come from one allocation, so they are contiguous; partial first and
// last clusters are completed with their old contents (read_old_cluster) and written once, guest
// data merged in.
Task<Status> Qcow2Image::write_allocating(uint64_t off, std::span<const iovec> iov) {
  uint64_t len = iov_length(iov);
  uint64_t gc = cluster_index(off);
  uint64_t in = off & (cluster_size_ - 1);
  uint64_t n = div_round_up(in + len, cluster_size_);
  uint64_t tail = n * cluster_size_ - (in + len);
  auto guard = co_await cluster_locks_.lock(gc, n, true);
  CO_ASSIGN_OR_RETURN(auto l2, co_await get_l2(l1_index(gc), true));
  std::vector<L2Entry> entries(n);
  for (uint64_t k = 0; k < n; ++k) {
    CO_ASSIGN_OR_RETURN(entries[k],
                        decode_entry(gc + k, load_be64(l2.data() + (l2_index(gc) + k) * 8)));
    const L2Entry& e = entries[k];
    // A compressed cluster is replaced by a normal one and its bytes released below: a hostile
    // entry must not make us drop the refcount of metadata.
    if (e.kind == ClusterKind::kCompressed && overlaps_metadata(e.host_offset, e.compressed_size)) {
      co_return co_await mark_corrupt(strfmt(
          "L2 entry for guest offset 0x%llx points into "
          "metadata (host offset 0x%llx)",
          (unsigned long long)((gc + k) << cluster_bits_), (unsigned long long)e.host_offset));
    }
  }
  // Which clusters get new host clusters, and where. A host cluster of our own (data or
  // zero-allocated, COPIED) is reused; anything else (unallocated, zero, shared) gets a new one.
  std::vector<uint64_t> host(n);
  std::vector<bool> fresh(n, false);
  uint64_t need = 0;
  for (uint64_t k = 0; k < n; ++k) {
    const L2Entry& e = entries[k];
    if (e.has_host_cluster() && e.copied) {
      host[k] = e.host_offset;
    } else {
      fresh[k] = true;
      ++need;
    }
  }
  uint64_t first_new = 0;
  if (need > 0) {
    auto alloc_guard = co_await alloc_mu_.lock();
    CO_ASSIGN_OR_RETURN(first_new, co_await alloc_clusters(need));
  }
  for (uint64_t k = 0, next = first_new; k < n; ++k) {
    if (fresh[k]) {
      host[k] = next;
      next += cluster_size_;
    }
  }
  // A cluster must be written whole when it is fresh or was a zero cluster: its old content
  // (zeros) fills the part the guest does not write.
  auto whole = [&](uint64_t k) { return fresh[k] || entries[k].is_zero(); };
  // The old content around the guest's data (a shared cluster's data, the backing image's, or
  // zeros): one read of the first cluster, one of the last, one in all when they are the same.
  bool need_head = whole(0) && in > 0;
  bool need_tail = whole(n - 1) && tail > 0;
  AlignedBuf first_old(need_head || (n == 1 && need_tail) ? cluster_size_ : 0);
  AlignedBuf last_old(n > 1 && need_tail ? cluster_size_ : 0);
  if (first_old.size) CO_RETURN_IF_ERROR(co_await read_old_cluster(gc, entries[0], first_old.p));
  if (last_old.size) {
    CO_RETURN_IF_ERROR(co_await read_old_cluster(gc + n - 1, entries[n - 1], last_old.p));
  }
  uint8_t* tail_src = (n == 1 ? first_old.p : last_old.p);
  if (tail_src) tail_src += cluster_size_ - tail;
  IovCursor cur(iov);
  std::vector<iovec> run;
  uint64_t k = 0;
  while (k < n) {
    uint64_t j = k + 1;
    while (j < n && host[j] == host[k] + (j - k) * cluster_size_) ++j;
    uint64_t start = (k == 0 && !whole(0)) ? in : 0;
    bool to_end = !(j == n && !whole(n - 1));
    uint64_t end_byte = to_end ? (j - k) * cluster_size_ : in + len - k * cluster_size_;
    if (overlaps_metadata(host[k] + start, end_byte - start)) {
      co_return co_await mark_corrupt(
          strfmt("L2 entry for guest offset 0x%llx points into "
                 "metadata (host offset 0x%llx)",
                 (unsigned long long)((gc + k) << cluster_bits_), (unsigned long long)host[k]));
    }
    run.clear();
    if (k == 0 && need_head) run.push_back({first_old.p, in});
    uint64_t guest_bytes =
        std::min((j - k) * cluster_size_, in + len - k * cluster_size_) - (k == 0 ? in : 0);
    cur.take(guest_bytes, run);
    if (j == n && need_tail) run.push_back({tail_src, tail});
    CO_RETURN_IF_ERROR(co_await file_->writev(host[k] + start, run));
    k = j;
  }
  // Data first, then the mapping: the refcounts of new clusters reach the file before the L2
  // entries that use them.
  if (need > 0 && !lazy_)
    CO_RETURN_IF_ERROR(co_await l2_cache_->set_dependency(refcount_cache_.get()));
  // And the data itself is durable before the L2 entry: a crash must not leave the entry
  // pointing at a cluster whose head and tail (zeros the guest flushed earlier) never reached
  // the disk, nor past the end of the file. Without it, a reused "zero, allocated" cluster or
  // any allocation with lazy refcounts had no barrier at all.
  l2_cache_->set_depends_on_flush();
  std::vector<uint64_t> freed;
  std::vector<HostRun> freed_compressed;
  for (uint64_t k = 0; k < n; ++k) {
    const L2Entry& e = entries[k];
    uint64_t ne = encode_normal(host[k], /*copied=*/true);
    if (ne == e.raw) continue;
    if (fresh[k] && e.has_host_cluster()) freed.push_back(e.host_offset);
    if (e.kind == ClusterKind::kCompressed) freed_compressed.push_back(host_run_of(e));
    store_be64(l2.data() + (l2_index(gc) + k) * 8, ne);
  }
  l2_cache_->mark_dirty(l2);
  if (!freed.empty() || !freed_compressed.empty()) {
    // Shared clusters we stopped using: the L2 update reaches the file before refcounts drop.
    if (!lazy_) CO_RETURN_IF_ERROR(co_await refcount_cache_->set_dependency(l2_cache_.get()));
    auto alloc_guard = co_await alloc_mu_.lock();
    for (uint64_t h : freed) CO_RETURN_IF_ERROR(co_await free_clusters(h, 1));
    for (const HostRun& r : freed_compressed)
      CO_RETURN_IF_ERROR(co_await release_clusters(r, false));
  }
  co_return Status{};
}

}  // namespace img::qcow2
