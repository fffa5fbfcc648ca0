// Compressed clusters (qcow2.rst "Compressed Clusters Descriptor"): reading them, and
// write_compressed, which qemu-img convert -c style callers use for whole clusters.
//
// Reading: the descriptor names a byte offset and a count of 512-byte sectors, which may cover
// more than the stream; consecutive descriptors usually lie back to back in the file (QEMU packs
// them), so a run of compressed clusters is fetched with one read per contiguous host range and
// decompressed in parallel on the thread pool.
//
// Writing: clusters are compressed in parallel on the pool, then, under the allocator lock,
// placed one after the other by alloc_bytes (QEMU's byte-granular packing), written with one
// write per contiguous run, and mapped. The order is the one every allocating write keeps: data
// and refcounts reach the disk before the L2 entries that use them; the host clusters of what
// the entries mapped before are released only after the new entries are written.
#include <algorithm>
#include <cstring>

#include "qcow2/driver.h"
#include "util/iov.h"
#include "util/thread_pool.h"

namespace img::qcow2 {

namespace {

// Guest bytes decompressed (or compressed) per batch: bounds the memory one request uses.
constexpr uint64_t kBatchBytes = 8ull << 20;
// Packed writes that share a block of this size are serialized (the largest O_DIRECT alignment
// the file layer uses).
constexpr uint64_t kPackedBlock = 4096;

}  // namespace

Task<Status> Qcow2Image::read_compressed(uint64_t gc, std::span<const L2Entry> entries, uint64_t in,
                                         uint64_t bytes, IovCursor& cur) {
  const uint64_t batch = std::max<uint64_t>(1, kBatchBytes / cluster_size_);
  std::vector<uint8_t> out(std::min<uint64_t>(batch, entries.size()) * cluster_size_);
  for (size_t k = 0; k < entries.size() && bytes > 0; k += batch) {
    size_t n = std::min<size_t>(batch, entries.size() - k);
    CO_RETURN_IF_ERROR(co_await decompress_clusters(gc + k, entries.subspan(k, n), out.data()));
    uint64_t take = std::min(bytes, n * cluster_size_ - in);
    cur.scatter(out.data() + in, take);
    bytes -= take;
    in = 0;
  }
  co_return Status{};
}

Task<Status> Qcow2Image::read_compressed_part(uint64_t gc, const L2Entry& e, uint64_t in,
                                              uint8_t* dst, uint64_t len) {
  std::vector<uint8_t> out(cluster_size_);
  CO_RETURN_IF_ERROR(co_await decompress_clusters(gc, std::span<const L2Entry>(&e, 1), out.data()));
  std::memcpy(dst, out.data() + in, len);
  co_return Status{};
}

Task<Status> Qcow2Image::decompress_clusters(uint64_t gc, std::span<const L2Entry> entries,
                                             uint8_t* out) {
  const size_t n = entries.size();
  // Host ranges to read: a descriptor that starts inside (or right at the end of) the current
  // range extends it. Each range is at most the sum of its descriptors (<= 2 clusters each).
  struct Range {
    uint64_t lo, hi, got = 0;
    size_t buf_off;
  };
  std::vector<Range> ranges;
  std::vector<size_t> range_of(n);
  uint64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    const L2Entry& e = entries[i];
    uint64_t end = e.host_offset + e.compressed_size;
    if (!ranges.empty() && e.host_offset >= ranges.back().lo && e.host_offset <= ranges.back().hi) {
      Range& r = ranges.back();
      if (end > r.hi) {
        total += end - r.hi;
        r.hi = end;
      }
    } else {
      ranges.push_back({e.host_offset, end, 0, total});
      total += e.compressed_size;
    }
    range_of[i] = ranges.size() - 1;
  }
  std::vector<uint8_t> in(total);
  for (Range& r : ranges) {
    // Past the end of the file reads as zeros: got says how much the file really holds (the
    // last descriptor of an image may round up past its end).
    CO_ASSIGN_OR_RETURN(r.got, co_await file_->read(r.lo, in.data() + r.buf_off, r.hi - r.lo));
  }
  std::vector<Status> result(n);
  const Codec codec = static_cast<Codec>(h_.compression_type);
  auto describe = [&](size_t i, const std::string& what) {
    const L2Entry& e = entries[i];
    return corruption(strfmt(
        "%s: compressed cluster for guest offset 0x%llx (host offset 0x%llx, "
        "%llu bytes) %s",
        file_->name().c_str(), (unsigned long long)((gc + i) << cluster_bits_),
        (unsigned long long)e.host_offset, (unsigned long long)e.compressed_size, what.c_str()));
  };
  std::vector<std::span<const uint8_t>> inputs(n);
  for (size_t i = 0; i < n; ++i) {
    const Range& r = ranges[range_of[i]];
    const L2Entry& e = entries[i];
    uint64_t avail_end = std::min(e.host_offset + e.compressed_size, r.lo + r.got);
    if (e.host_offset >= avail_end) {
      result[i] = describe(i, "lies past the end of the file");
      continue;
    }
    inputs[i] = std::span<const uint8_t>(in.data() + r.buf_off + (e.host_offset - r.lo),
                                         avail_end - e.host_offset);
  }
  co_await parallel_for(ThreadPool::shared(), loop_, n, [&](size_t i) {
    if (!result[i]) return;
    std::span<uint8_t> dst(out + i * cluster_size_, cluster_size_);
    Status s = decompress_cluster(codec, inputs[i], dst);
    if (!s) result[i] = describe(i, "does not decompress: " + s.error().message());
  });
  for (Status& s : result) CO_RETURN_IF_ERROR(std::move(s));
  co_return Status{};
}

Task<Status> Qcow2Image::write_compressed(uint64_t off, const void* buf, uint64_t len) {
  CO_RETURN_IF_ERROR(check_writable("compressed write"));
  CO_RETURN_IF_ERROR(check_range("compressed write", off, len));
  // As QEMU's qcow2_co_pwritev_compressed_part: compressed data is packed into the qcow2 file,
  // and an image with an external data file keeps no data there.
  if (has_data_file()) co_return no_data_file_support("compression");
  CO_RETURN_IF_ERROR(co_await mark_bitmaps_before_change());
  // A partial cluster only at the end: the image's last cluster (its size may not be cluster
  // aligned), written into its last 512-byte sector, so the zero padding covers at most the rest
  // of that sector: a source whose size is not a multiple of 512 (convert -c) ends there, as
  // QEMU's image size is rounded up to a sector. One stopping short of that would be padded
  // over bytes the caller did not write (QEMU's qcow2_co_pwritev_compressed_part refuses it).
  bool last_partial = h_.size - (off + len) < 512;
  if (!is_aligned(off, cluster_size_) || (!is_aligned(len, cluster_size_) && !last_partial)) {
    co_return invalid_argument(
        strfmt("%s: compressed write of %llu bytes at %llu is not whole "
               "clusters of %llu bytes",
               file_->name().c_str(), (unsigned long long)len, (unsigned long long)off,
               (unsigned long long)cluster_size_));
  }
  if (len == 0) co_return Status{};
  CO_RETURN_IF_ERROR(co_await mark_dirty_if_lazy());
  const uint8_t* p = static_cast<const uint8_t*>(buf);
  const uint64_t batch = std::max<uint64_t>(1, kBatchBytes / cluster_size_);
  while (len > 0) {
    uint64_t gc = cluster_index(off);
    uint64_t n = std::min({div_round_up(len, cluster_size_), l2_entries_ - l2_index(gc), batch});
    uint64_t bytes = std::min(len, n * cluster_size_);
    CO_RETURN_IF_ERROR(co_await write_compressed_run(gc, p, bytes));
    off += bytes;
    p += bytes;
    len -= bytes;
  }
  co_return Status{};
}

Task<Status> Qcow2Image::write_compressed_run(uint64_t gc, const uint8_t* src, uint64_t len) {
  const uint64_t cs = cluster_size_;
  const size_t n = div_round_up(len, cs);
  std::vector<uint8_t> out(n * cs);
  std::vector<size_t> csize(n, 0);
  std::vector<Status> result(n);
  const Codec codec = static_cast<Codec>(h_.compression_type);
  co_await parallel_for(ThreadPool::shared(), loop_, n, [&](size_t i) {
    std::span<const uint8_t> input(src + i * cs, std::min(cs, len - i * cs));
    thread_local std::vector<uint8_t> padded;
    if (input.size() < cs) {
      // The last cluster of an image whose size is not cluster aligned: zero-padded, as QEMU.
      padded.assign(cs, 0);
      std::memcpy(padded.data(), input.data(), input.size());
      input = padded;
    }
    // As QEMU: stored compressed only if the result is smaller than a cluster.
    Result<size_t> r =
        compress_cluster(codec, input, std::span<uint8_t>(out.data() + i * cs, cs - 1));
    if (r) {
      csize[i] = *r;
    } else {
      result[i] = Unexpected(r.error());
    }
  });
  for (Status& s : result) CO_RETURN_IF_ERROR(std::move(s));
  // Clusters that do not compress take the ordinary write path (a normal cluster), before this
  // request holds any cluster lock.
  for (size_t i = 0; i < n; ++i) {
    if (csize[i] == 0) {
      const uint64_t at = (gc + i) << cluster_bits_;
      const uint64_t given = std::min(cs, len - i * cs);
      // A range ending inside the last sector: the rest of it reads as zeros, as it does when
      // the cluster compresses (zero padded).
      const uint64_t whole = std::min(cs, h_.size - at);
      std::vector<uint8_t> padded;
      const uint8_t* data = src + i * cs;
      if (whole > given) {
        padded.assign(whole, 0);
        std::memcpy(padded.data(), data, given);
        data = padded.data();
      }
      CO_RETURN_IF_ERROR(co_await write(at, data, whole));
    }
  }
  if (std::all_of(csize.begin(), csize.end(), [](size_t s) { return s == 0; })) {
    co_return Status{};
  }

  auto guard = co_await cluster_locks_.lock(gc, n, true);
  CO_ASSIGN_OR_RETURN(auto l2, co_await get_l2(l1_index(gc), true));
  std::vector<L2Entry> old(n);
  for (size_t i = 0; i < n; ++i) {
    if (csize[i] == 0) continue;
    CO_ASSIGN_OR_RETURN(old[i], decode_entry(gc + i, l2_at(l2.data(), gc + i)));
    const L2Entry& e = old[i];
    uint64_t host_len = e.kind == ClusterKind::kCompressed ? e.compressed_size
                        : e.has_host_cluster()             ? cs
                                                           : 0;
    // What the entry maps now is released below: a hostile entry must not make us drop the
    // refcount of metadata.
    if (host_len && overlaps_metadata(e.host_offset, host_len)) {
      co_return co_await mark_corrupt(strfmt(
          "L2 entry for guest offset 0x%llx points into "
          "metadata (host offset 0x%llx)",
          (unsigned long long)((gc + i) << cluster_bits_), (unsigned long long)e.host_offset));
    }
  }
  std::vector<uint64_t> host(n, 0);
  {
    auto alloc_guard = co_await alloc_mu_.lock();
    for (size_t i = 0; i < n; ++i) {
      if (csize[i] == 0) continue;
      CO_ASSIGN_OR_RETURN(host[i], co_await alloc_bytes(csize[i]));
    }
  }
  // One write per run of clusters placed back to back.
  std::vector<iovec> iov;
  for (size_t i = 0; i < n;) {
    if (csize[i] == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    uint64_t end = host[i];
    iov.clear();
    while (j < n && csize[j] && host[j] == end) {
      iov.push_back({out.data() + j * cs, csize[j]});
      end += csize[j];
      ++j;
    }
    if (overlaps_metadata(host[i], end - host[i])) {
      co_return co_await mark_corrupt(
          strfmt("compressed data for guest offset 0x%llx would "
                 "overwrite metadata at host offset 0x%llx",
                 (unsigned long long)((gc + i) << cluster_bits_), (unsigned long long)host[i]));
    }
    CO_RETURN_IF_ERROR(co_await write_packed(host[i], iov));
    wrote_compressed_ = true;
    i = j;
  }
  // Refcounts before the L2 entries; the data durable before them too (as write_allocating).
  if (!lazy_) CO_RETURN_IF_ERROR(co_await l2_cache_->set_dependency(refcount_cache_.get()));
  l2_cache_->set_depends_on_flush();
  std::vector<HostRun> freed;
  for (size_t i = 0; i < n; ++i) {
    if (csize[i] == 0) continue;
    const L2Entry& e = old[i];
    if (e.kind == ClusterKind::kCompressed || e.has_host_cluster()) freed.push_back(host_run_of(e));
    set_l2_at(l2.data(), gc + i, encode_compressed(host[i], csize[i], cluster_bits_));
  }
  l2_cache_->mark_dirty(l2);
  if (!freed.empty()) {
    // The new entries reach the file before the old clusters' refcounts drop.
    if (!lazy_) CO_RETURN_IF_ERROR(co_await refcount_cache_->set_dependency(l2_cache_.get()));
    auto alloc_guard = co_await alloc_mu_.lock();
    for (const HostRun& r : freed) CO_RETURN_IF_ERROR(co_await release_clusters(r, false));
  }
  co_return Status{};
}

Task<Status> Qcow2Image::write_packed(uint64_t off, std::span<const iovec> iov) {
  uint64_t first = off / kPackedBlock;
  uint64_t last = (off + iov_length(iov) - 1) / kPackedBlock;
  auto overlaps = [&] {
    return std::any_of(packed_in_flight_.begin(), packed_in_flight_.end(),
                       [&](const auto& r) { return r.first <= last && first <= r.second; });
  };
  while (overlaps()) co_await packed_done_.wait();
  packed_in_flight_.emplace_back(first, last);
  Status s = co_await file_->writev(off, iov);
  auto it = std::find(packed_in_flight_.begin(), packed_in_flight_.end(),
                      std::pair<uint64_t, uint64_t>(first, last));
  packed_in_flight_.erase(it);
  packed_done_.notify_all();
  co_return s;
}

}  // namespace img::qcow2

namespace img::qcow2 {

Task<Status> Qcow2Image::pad_to_sector() {
  CO_ASSIGN_OR_RETURN(uint64_t size, file_->size());
  if (size % 512 == 0) co_return Status{};
  co_return co_await file_->truncate(align_up(size, 512));
}

}  // namespace img::qcow2
