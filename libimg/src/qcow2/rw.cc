// Guest reads and writes. Requests are cut at L2-table boundaries; inside one table, clusters
// whose host clusters are contiguous become one vectored read or write straight between the
// caller's buffers and the file.
#include <bit>
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
  std::vector<RawL2> entries;
  std::vector<iovec> run;
  // Zeros read alike whether a host cluster is kept or not.
  auto read_class = [](ClusterKind k) {
    return k == ClusterKind::kZeroAlloc ? ClusterKind::kZeroPlain : k;
  };
  while (len > 0) {
    const uint64_t gc = cluster_index(off);
    const uint64_t n = std::min(div_round_up((off & (cluster_size_ - 1)) + len, cluster_size_),
                                l2_entries_ - l2_index(gc));
    CO_RETURN_IF_ERROR(co_await lookup(gc, n, entries));
    while (len > 0 && cluster_index(off) - gc < n) {
      const uint64_t k = cluster_index(off) - gc;
      const uint64_t in = off & (cluster_size_ - 1);
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
        continue;
      }
      // The run of subclusters from `in` that read alike (with extended L2 it may end inside
      // the cluster), then over following clusters of the same kind, data only while the host
      // clusters are contiguous.
      const unsigned sc = static_cast<unsigned>(in >> sc_bits_);
      const ClusterKind kind = read_class(e.sub_kind(sc));
      const bool data = kind == ClusterKind::kNormal;
      const uint64_t host = e.host_offset + in;
      uint64_t end_in = uint64_t{e.sub_run_end(sc)} << sc_bits_;
      uint64_t bytes = std::min(end_in - in, len);
      for (uint64_t j = k + 1; end_in == cluster_size_ && j < n && bytes < len; ++j) {
        CO_ASSIGN_OR_RETURN(L2Entry e2, decode_entry(gc + j, entries[j]));
        if (e2.kind == ClusterKind::kCompressed || read_class(e2.sub_kind(0)) != kind) break;
        if (data && e2.host_offset != host + bytes) break;
        end_in = uint64_t{e2.sub_run_end(0)} << sc_bits_;
        bytes += std::min(end_in, len - bytes);
      }
      if (data) {
        run.clear();
        cur.take(bytes, run);
        CO_ASSIGN_OR_RETURN(uint64_t got, co_await data_io().readv(host, run));
        (void)got;  // past the end of the file reads as zeros, as in QEMU
      } else if (kind == ClusterKind::kUnallocated) {
        CO_RETURN_IF_ERROR(co_await read_unallocated(off, bytes, cur));
      } else {
        cur.zero(bytes);  // zero clusters or subclusters: hide the backing image
      }
      off += bytes;
      len -= bytes;
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
  co_return co_await read_old_range(gc, e, 0, cluster_size_, buf);
}

Task<Status> Qcow2Image::read_old_range(uint64_t gc, const L2Entry& e, uint64_t from, uint64_t to,
                                        uint8_t* buf) {
  if (e.kind == ClusterKind::kCompressed) {
    co_return co_await read_compressed_part(gc, e, from, buf, to - from);
  }
  for (uint64_t at = from; at < to;) {
    const unsigned sc = static_cast<unsigned>(at >> sc_bits_);
    const uint64_t end = std::min(to, uint64_t{e.sub_run_end(sc)} << sc_bits_);
    uint8_t* p = buf + (at - from);
    const uint64_t n = end - at;
    switch (e.sub_kind(sc)) {
      case ClusterKind::kNormal: {
        CO_ASSIGN_OR_RETURN(uint64_t got, co_await data_io().read(e.host_offset + at, p, n));
        std::memset(p + got, 0, n - got);  // past the end of the file: zeros
        break;
      }
      case ClusterKind::kUnallocated: {
        iovec v{p, n};
        IovCursor cur(std::span<const iovec>(&v, 1));
        CO_RETURN_IF_ERROR(co_await read_unallocated((gc << cluster_bits_) + at, n, cur));
        break;
      }
      default:  // zeros
        std::memset(p, 0, n);
        break;
    }
    at = end;
  }
  co_return Status{};
}

Task<Status> Qcow2Image::writev(uint64_t off, std::span<const iovec> iov) {
  CO_RETURN_IF_ERROR(check_writable("write"));
  uint64_t len = iov_length(iov);
  CO_RETURN_IF_ERROR(check_range("write", off, len));
  CO_RETURN_IF_ERROR(co_await mark_bitmaps_before_change());
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
  std::vector<RawL2> entries;
  CO_RETURN_IF_ERROR(co_await lookup(gc, n, entries));
  auto in_place = [&](uint64_t k) {
    Result<L2Entry> e = decode_entry(gc + k, entries[k]);
    if (!e || !e->writable_in_place()) return false;
    if (!extended_) return true;
    // Extended L2: every subcluster the write touches must hold data already.
    const uint64_t t0 = k == 0 ? in : 0;
    const uint64_t t1 = std::min(cluster_size_, in + len - k * cluster_size_);
    const uint64_t want = alloc_range(static_cast<unsigned>(t0 >> sc_bits_),
                                      static_cast<unsigned>(div_round_up(t1, sc_size_)));
    return (e->bitmap & want) == want;
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
    uint64_t host = entries[k].entry & kL2OffsetMask;  // decoded above: a normal cluster
    uint64_t j = k + 1;
    while (j < n && (entries[j].entry & kL2OffsetMask) == host + (j - k) * cluster_size_) ++j;
    uint64_t start = k == 0 ? in : 0;
    uint64_t end_byte = std::min<uint64_t>((j - k) * cluster_size_, in + len - k * cluster_size_);
    uint64_t bytes = end_byte - start;
    if (!has_data_file() && overlaps_metadata(host + start, bytes)) {
      co_return co_await mark_corrupt(
          strfmt("L2 entry for guest offset 0x%llx points into "
                 "metadata (host offset 0x%llx)",
                 (unsigned long long)((gc + k) << cluster_bits_), (unsigned long long)host));
    }
    run.clear();
    cur.take(bytes, run);
    CO_RETURN_IF_ERROR(co_await data_io().writev(host + start, run));
    k = j;
  }
  *done = true;
  co_return Status{};
}

// Slow path: some cluster needs a new host cluster (unallocated, zero, or shared), or with
// extended L2 some subcluster needs allocating. Exclusive cluster locks; new clusters come from
// one allocation, so they are contiguous; the partial first and last clusters (subclusters, with
// extended L2) are completed with their old contents (read_old_range) and written once, guest
// data merged in.
Task<Status> Qcow2Image::write_allocating(uint64_t off, std::span<const iovec> iov) {
  uint64_t len = iov_length(iov);
  uint64_t gc = cluster_index(off);
  uint64_t in = off & (cluster_size_ - 1);
  uint64_t n = div_round_up(in + len, cluster_size_);
  auto guard = co_await cluster_locks_.lock(gc, n, true);
  CO_ASSIGN_OR_RETURN(auto l2, co_await get_l2(l1_index(gc), true));
  std::vector<L2Entry> entries(n);
  for (uint64_t k = 0; k < n; ++k) {
    CO_ASSIGN_OR_RETURN(entries[k], decode_entry(gc + k, l2_at(l2.data(), gc + k)));
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
  // In an external data file every guest cluster has its place already: its own offset.
  std::vector<uint64_t> host(n);
  std::vector<bool> fresh(n, false);
  uint64_t need = 0;
  for (uint64_t k = 0; k < n; ++k) {
    const L2Entry& e = entries[k];
    if (has_data_file()) {
      fresh[k] = !e.has_host_cluster();
      host[k] = fresh[k] ? (gc + k) << cluster_bits_ : e.host_offset;
    } else if (e.has_host_cluster() && e.copied) {
      host[k] = e.host_offset;
    } else {
      fresh[k] = true;
      ++need;
    }
  }
  uint64_t first_new = 0;
  if (need > 0 && !has_data_file()) {
    auto alloc_guard = co_await alloc_mu_.lock();
    CO_ASSIGN_OR_RETURN(first_new, co_await alloc_clusters(need));
  }
  for (uint64_t k = 0, next = first_new; k < n && !has_data_file(); ++k) {
    if (fresh[k]) {
      host[k] = next;
      next += cluster_size_;
    }
  }
  // Per cluster, the guest's bytes [t0, t1) and the bytes [from, to) written to the host
  // cluster around them: with old content (zeros, the backing image's, a shared cluster's data)
  // where the guest's do not cover a unit that becomes data. The unit is the cluster without
  // extended L2 (a fresh or zero cluster is written whole), the subcluster with it.
  std::vector<uint64_t> from(n), to(n);
  auto t0 = [&](uint64_t k) { return k == 0 ? in : 0; };
  auto t1 = [&](uint64_t k) { return std::min(cluster_size_, in + len - k * cluster_size_); };
  for (uint64_t k = 0; k < n; ++k) {
    const L2Entry& e = entries[k];
    if (!extended_) {
      bool whole = fresh[k] || e.is_zero();
      from[k] = whole ? 0 : t0(k);
      to[k] = whole ? cluster_size_ : t1(k);
      continue;
    }
    if (fresh[k] && e.kind == ClusterKind::kCompressed) {
      from[k] = 0;  // compressed clusters have no subclusters: all of it becomes data
      to[k] = cluster_size_;
      continue;
    }
    from[k] = align_down(t0(k), sc_size_);
    to[k] = align_up(t1(k), sc_size_);
    if (!fresh[k]) {
      // A subcluster holding our data already needs no copy: write from the guest's bytes.
      if (e.sub_kind(static_cast<unsigned>(t0(k) >> sc_bits_)) == ClusterKind::kNormal) {
        from[k] = t0(k);
      }
      if (e.sub_kind(static_cast<unsigned>((t1(k) - 1) >> sc_bits_)) == ClusterKind::kNormal) {
        to[k] = t1(k);
      }
    } else if (const uint32_t alloc = static_cast<uint32_t>(e.bitmap & kBitmapAllAlloc)) {
      // A shared cluster is copied: its data subclusters come along (all in between become
      // data, completed from what they read as, as QEMU's calculate_l2_meta does).
      from[k] = std::min<uint64_t>(from[k], uint64_t(std::countr_zero(alloc)) << sc_bits_);
      to[k] = std::max<uint64_t>(to[k], uint64_t(32 - std::countl_zero(alloc)) << sc_bits_);
    }
  }
  // The old content around the guest's data: one read before it in the first cluster, one
  // after it in the last, one in all when they are the same cluster.
  const uint64_t head = t0(0) - from[0];
  const uint64_t tail = to[n - 1] - t1(n - 1);
  AlignedBuf first_old(head && n == 1 && tail ? to[0] - from[0] : head);
  AlignedBuf last_old(tail && !(head && n == 1) ? tail : 0);
  if (first_old.size) {
    CO_RETURN_IF_ERROR(
        co_await read_old_range(gc, entries[0], from[0], from[0] + first_old.size, first_old.p));
  }
  if (last_old.size) {
    CO_RETURN_IF_ERROR(
        co_await read_old_range(gc + n - 1, entries[n - 1], t1(n - 1), to[n - 1], last_old.p));
  }
  uint8_t* tail_src = !tail           ? nullptr
                      : last_old.size ? last_old.p
                                      : first_old.p + (t1(0) - from[0]);
  IovCursor cur(iov);
  std::vector<iovec> run;
  uint64_t k = 0;
  while (k < n) {
    // Clusters written back to back: each one up to its end, the next from its start.
    uint64_t j = k + 1;
    while (j < n && to[j - 1] == cluster_size_ && from[j] == 0 &&
           host[j] == host[k] + (j - k) * cluster_size_) {
      ++j;
    }
    const uint64_t start = host[k] + from[k];
    const uint64_t bytes = (j - 1 - k) * cluster_size_ + to[j - 1] - from[k];
    if (!has_data_file() && overlaps_metadata(start, bytes)) {
      co_return co_await mark_corrupt(
          strfmt("L2 entry for guest offset 0x%llx points into "
                 "metadata (host offset 0x%llx)",
                 (unsigned long long)((gc + k) << cluster_bits_), (unsigned long long)host[k]));
    }
    run.clear();
    if (k == 0 && head) run.push_back({first_old.p, head});
    uint64_t guest_bytes = 0;
    for (uint64_t i = k; i < j; ++i) guest_bytes += t1(i) - t0(i);
    cur.take(guest_bytes, run);
    if (j == n && tail) run.push_back({tail_src, tail});
    CO_RETURN_IF_ERROR(co_await data_io().writev(start, run));
    k = j;
  }
  // Data first, then the mapping: the refcounts of new clusters reach the file before the L2
  // entries that use them.
  if (need > 0 && !lazy_ && !has_data_file())
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
    RawL2 ne = encode_normal(host[k], /*copied=*/true);
    if (extended_) {
      // The subclusters written become data; the others keep what they were (a compressed
      // entry's bitmap is zero, and it was written whole).
      const unsigned s0 = static_cast<unsigned>(from[k] >> sc_bits_);
      const unsigned s1 = static_cast<unsigned>(div_round_up(to[k], sc_size_));
      ne.bitmap = (e.bitmap | alloc_range(s0, s1)) & ~zero_range(s0, s1);
    }
    if (ne == e.raw_l2()) continue;
    if (fresh[k] && e.has_host_cluster() && !has_data_file()) freed.push_back(e.host_offset);
    if (e.kind == ClusterKind::kCompressed) freed_compressed.push_back(host_run_of(e));
    set_l2_at(l2.data(), gc + k, ne);
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
