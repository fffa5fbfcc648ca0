// convert: copies images (one, or several end to end) into another, walking the sources' runs.
//
// The walk follows the data, not the virtual size: one block_status call answers a whole run
// (an empty 1 PiB qcow2 is one run), and the run is cut into chunks only where data has to move:
// data runs into chunks of at most chunk_size bytes, zero runs into one chunk each (nothing to
// read; on a destination that reads as zeros, nothing to write either). As qemu-img convert does
// (qemu-img.c convert_iteration_sectors / convert_co_do_copy):
//   - a chunk is handed out under one lock, from the run the last block_status call found, so
//     the runs are asked for once each, in order, whatever the number of workers;
//   - workers read their chunks in parallel and, unless in_order is off (-W), write them in
//     offset order;
//   - data is scanned for zeros (sparse detection, -S, convert_sparse.h) before it is written.
// With compression (-c) a chunk is whole destination clusters, and each cluster that is not all
// zeros is written compressed (the driver compresses on a thread pool, so the chunks in flight
// keep every core busy).
#include <algorithm>
#include <coroutine>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "img/bytes.h"
#include "img/ops.h"
#include "ops/convert_sparse.h"
#include "util/async.h"

namespace img {
namespace {

using convert_internal::first_sparse_piece;
using convert_internal::sparse_alignment;
using convert_internal::SparsePiece;

constexpr uint64_t kBufferAlign = 4096;  // O_DIRECT on either side needs aligned buffers

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, AlignedFree>;

// The sources end to end, as one image. As in qemu-img, which counts sources in 512-byte
// sectors, each source is padded with zeros to a multiple of 512 bytes: the next one starts
// there.
class Concat {
 public:
  static constexpr uint64_t kSector = 512;
  explicit Concat(std::span<BlockDriver* const> parts) {
    for (BlockDriver* d : parts) {
      uint64_t padded = align_up(d->size(), kSector);
      parts_.push_back({d, total_, padded});
      total_ += padded;
    }
  }
  uint64_t size() const { return total_; }

  struct Part {
    BlockDriver* drv;
    uint64_t start;
    uint64_t size;  // drv->size() rounded up to a sector
  };
  // The part holding byte off (REQUIRES off < size()).
  const Part& part_at(uint64_t off) const {
    auto it = std::upper_bound(parts_.begin(), parts_.end(), off,
                               [](uint64_t o, const Part& p) { return o < p.start; });
    return *(it - 1);
  }
  // One run from off on, inside one part.
  Task<Result<BlockStatus>> block_status(uint64_t off, uint64_t len) {
    const Part& p = part_at(off);
    uint64_t in = off - p.start;
    uint64_t real = p.drv->size();
    if (in >= real) {  // the padding of a source that ends inside a sector
      BlockStatus st;
      st.kind = BlockStatus::Kind::kZero;
      st.length = std::min(len, p.size - in);
      co_return st;
    }
    co_return co_await p.drv->block_status(in, std::min(len, real - in));
  }
  // Reads [off, off+len), across parts if need be (compressed chunks are whole clusters, which
  // may span two sources).
  Task<Status> read(uint64_t off, uint8_t* buf, uint64_t len) {
    while (len > 0) {
      const Part& p = part_at(off);
      uint64_t in = off - p.start;
      uint64_t n = std::min(len, p.size - in);
      uint64_t real = p.drv->size();
      uint64_t from_drv = in < real ? std::min(n, real - in) : 0;
      if (from_drv > 0) CO_RETURN_IF_ERROR(co_await p.drv->read(in, buf, from_drv));
      std::memset(buf + from_drv, 0, n - from_drv);
      off += n;
      buf += n;
      len -= n;
    }
    co_return Status{};
  }

 private:
  std::vector<Part> parts_;
  uint64_t total_ = 0;
};

// What a chunk needs.
enum class ChunkKind {
  kData,     // read from the source, written (sparse detection applies)
  kZero,     // reads as zeros: written as zeros unless the destination reads as zeros already
  kBacking,  // left to the destination's backing file: nothing to do
};

struct Chunk {
  uint64_t off = 0;
  uint64_t len = 0;
  ChunkKind kind = ChunkKind::kData;
};

// Shared state of one convert.
struct ConvertJob {
  ConvertJob(IoLoop& l, Concat& s, BlockDriver& d, const ConvertOptions& o)
      : loop(l), src(s), dst(d), opts(o), lock(l) {}
  IoLoop& loop;
  Concat& src;
  BlockDriver& dst;
  const ConvertOptions& opts;
  AsyncMutex lock;  // held while a chunk is handed out (it may ask block_status)
  uint64_t chunk_size = 0;
  uint64_t cluster = 0;  // compression: the destination's cluster size
  uint64_t alignment = 512;
  uint64_t total = 0;
  uint64_t next = 0;     // the next chunk starts here
  uint64_t run_end = 0;  // the current run [.., run_end) has kind run_kind
  ChunkKind run_kind = ChunkKind::kData;
  bool copy_range = false;  // still trying copy offloading
  uint64_t written_to = 0;  // in_order: every chunk before this offset is written
  std::map<uint64_t, std::coroutine_handle<>> waiting;  // in_order: writers by chunk offset
  uint64_t done = 0;
  ConvertStats stats;
  std::optional<Error> error;
  unsigned running = 0;
  std::coroutine_handle<> waiter;  // resumed when running drops to 0

  void fail(Error e) {
    if (error) return;
    error = std::move(e);
    // Writers waiting for their turn give up.
    for (auto& [off, h] : waiting) loop.post(h);
    waiting.clear();
  }
};

// Awaitable: suspends until every worker finished.
struct AllDone {
  ConvertJob& job;
  bool await_ready() const noexcept { return job.running == 0; }
  void await_suspend(std::coroutine_handle<> h) { job.waiter = h; }
  void await_resume() const noexcept {}
};

// Awaitable: in_order, suspends until every chunk before off is written (or the job failed).
struct TurnOf {
  ConvertJob& job;
  uint64_t off;
  bool await_ready() const noexcept { return job.error || job.written_to == off; }
  void await_suspend(std::coroutine_handle<> h) { job.waiting[off] = h; }
  void await_resume() const noexcept {}
};

// How the destination treats a source run.
ChunkKind classify(const ConvertJob& job, const BlockStatus& st, uint64_t off) {
  switch (st.kind) {
    case BlockStatus::Kind::kData:
      if (!st.known_zero) return ChunkKind::kData;
      [[fallthrough]];  // allocated, and known to read as zeros: a zero run, as qemu takes it
    case BlockStatus::Kind::kZero:
    case BlockStatus::Kind::kUnallocated:
      // Past the end of the destination's backing file it reads as zeros by itself.
      if (job.opts.target_has_backing && off >= job.opts.target_backing_size) {
        return ChunkKind::kBacking;
      }
      return ChunkKind::kZero;
    case BlockStatus::Kind::kBacking:
      return job.opts.target_has_backing ? ChunkKind::kBacking : ChunkKind::kData;
  }
  return ChunkKind::kData;
}

// The next chunk, or nothing at the end. REQUIRES job.lock held.
Task<Result<std::optional<Chunk>>> next_chunk(ConvertJob& job) {
  if (job.error || job.next >= job.total) co_return std::nullopt;
  Chunk c{.off = job.next};
  if (job.run_end <= c.off) {
    uint64_t want = job.total - c.off;
    // Runs end where the destination's backing file does: past it zeros need no write.
    if (job.opts.target_has_backing && c.off < job.opts.target_backing_size) {
      want = std::min(want, job.opts.target_backing_size - c.off);
    }
    auto st = co_await job.src.block_status(c.off, want);
    ++job.stats.block_status_calls;
    if (!st) {
      co_return Unexpected(std::move(st.error())
                               .prepend(strfmt("error while reading block status at offset %llu",
                                               (unsigned long long)c.off)));
    }
    job.run_kind = classify(job, *st, c.off);
    job.run_end = c.off + std::max<uint64_t>(st->length, 1);
  }
  c.kind = job.run_kind;
  c.len = job.run_end - c.off;
  // Data moves through a buffer; with -S 0 zeros are written as data too.
  if (c.kind == ChunkKind::kData || (c.kind == ChunkKind::kZero && job.opts.min_sparse == 0)) {
    c.len = std::min(c.len, job.chunk_size);
  }
  // Compressed clusters are written whole: a run shorter than a cluster makes the whole cluster
  // data (its zero parts are read as zeros), longer ones stop at a cluster boundary.
  if (job.opts.compress && c.kind != ChunkKind::kBacking) {
    if (c.len < job.cluster) {
      c.len = std::min(job.cluster, job.total - c.off);
      c.kind = ChunkKind::kData;
    } else {
      c.len = c.len / job.cluster * job.cluster;
    }
  }
  job.next += c.len;
  co_return c;
}

Task<Status> write_zero_range(ConvertJob& job, uint64_t off, uint64_t len) {
  job.stats.bytes_zero += len;
  if (job.opts.target_is_zero) co_return Status{};
  // Zeros may be left as holes unless the destination is to be fully allocated (-S 0 opens
  // qemu-img's target without BDRV_O_UNMAP).
  co_return co_await job.dst.write_zeroes(off, len, {.may_unmap = job.opts.min_sparse != 0});
}

// Writes buf (holding [off, off+len) of the image) to dst, leaving out zero pieces.
Task<Status> write_data(ConvertJob& job, uint64_t off, const uint8_t* buf, uint64_t len) {
  if (job.opts.min_sparse == 0) {
    CO_RETURN_IF_ERROR(co_await job.dst.write(off, buf, len));
    job.stats.bytes_written += len;
    co_return Status{};
  }
  uint64_t pos = 0;
  while (pos < len) {
    SparsePiece p =
        first_sparse_piece(buf + pos, len - pos, off + pos, job.opts.min_sparse, job.alignment);
    if (p.data) {
      CO_RETURN_IF_ERROR(co_await job.dst.write(off + pos, buf + pos, p.length));
      job.stats.bytes_written += p.length;
    } else {
      CO_RETURN_IF_ERROR(co_await write_zero_range(job, off + pos, p.length));
    }
    pos += p.length;
  }
  co_return Status{};
}

// Writes a chunk of whole destination clusters compressed; clusters of zeros are zero ranges.
Task<Status> write_compressed_chunk(ConvertJob& job, uint64_t off, uint8_t* buf, uint64_t len) {
  const uint64_t cs = job.cluster;
  // Runs of clusters to compress go to the driver together, so it compresses them in parallel.
  uint64_t run_start = 0, run_len = 0;
  auto flush_run = [&]() -> Task<Status> {
    if (run_len == 0) co_return Status{};
    CO_RETURN_IF_ERROR(
        co_await job.dst.write_compressed(off + run_start, buf + run_start, run_len));
    job.stats.bytes_written += run_len;
    run_len = 0;
    co_return Status{};
  };
  for (uint64_t c = 0; c < len; c += cs) {
    uint64_t n = std::min(cs, len - c);
    // Only a cluster that is all zeros is skipped (qemu-img convert -c); -S 0 writes even those.
    if (job.opts.min_sparse == 0 || !is_zero(buf + c, n)) {
      if (run_len == 0) run_start = c;
      run_len += n;
      continue;
    }
    CO_RETURN_IF_ERROR(co_await flush_run());
    CO_RETURN_IF_ERROR(co_await write_zero_range(job, off + c, n));
  }
  // A destination larger than the source (its size rounded up to whole sectors) ends with a
  // partial cluster that a compressed write must cover up to the image end: the rest is zeros.
  uint64_t dst_end = job.dst.size();
  if (run_len > 0 && off + run_start + run_len == job.total && job.total < dst_end) {
    uint64_t end = std::min(align_up(run_start + run_len, cs), dst_end - off);
    std::memset(buf + run_start + run_len, 0, end - run_start - run_len);
    run_len = end - run_start;
  }
  co_return co_await flush_run();
}

// Copies a data chunk by copy offloading. Returns false where the two sides cannot (copy_range
// is then off for the rest of the job).
Task<Result<bool>> try_copy_range(ConvertJob& job, const Chunk& c) {
  const Concat::Part& p = job.src.part_at(c.off);
  // Only what lies inside the source itself (never its padding: kZero) is offloaded.
  Status s = co_await p.drv->copy_range_to(c.off - p.start, job.dst, c.off, c.len);
  if (s) {
    job.stats.bytes_offloaded += c.len;
    co_return true;
  }
  if (s.error().code() != ErrorCode::kNotSupported) co_return Unexpected(std::move(s).error());
  job.copy_range = false;
  co_return false;
}

// Reads (or zero-fills) a chunk into buf.
Task<Status> read_chunk(ConvertJob& job, const Chunk& c, uint8_t* buf) {
  if (c.kind == ChunkKind::kData) {
    Status s = co_await job.src.read(c.off, buf, c.len);
    if (!s) {
      co_return Unexpected(std::move(s).error().prepend(
          strfmt("error while reading at byte %llu", (unsigned long long)c.off)));
    }
    job.stats.bytes_read += c.len;
  } else if (c.kind == ChunkKind::kZero && job.opts.min_sparse == 0) {
    std::memset(buf, 0, c.len);  // -S 0: zeros are written as data
  }
  co_return Status{};
}

Task<Status> write_chunk(ConvertJob& job, const Chunk& c, uint8_t* buf) {
  bool as_data =
      c.kind == ChunkKind::kData || (c.kind == ChunkKind::kZero && job.opts.min_sparse == 0);
  if (c.kind == ChunkKind::kBacking) {
    job.stats.bytes_backing += c.len;
    co_return Status{};
  }
  if (!as_data) co_return co_await write_zero_range(job, c.off, c.len);
  if (job.opts.compress) co_return co_await write_compressed_chunk(job, c.off, buf, c.len);
  co_return co_await write_data(job, c.off, buf, c.len);
}

Task<Status> copy_chunk(ConvertJob& job, const Chunk& c, uint8_t* buf) {
  bool offload = job.copy_range && c.kind == ChunkKind::kData;
  if (!offload) CO_RETURN_IF_ERROR(co_await read_chunk(job, c, buf));
  if (job.opts.in_order) co_await TurnOf{job, c.off};
  if (job.error) co_return Status{};
  if (offload) {
    CO_ASSIGN_OR_RETURN(bool copied, co_await try_copy_range(job, c));
    if (copied) co_return Status{};
    CO_RETURN_IF_ERROR(co_await read_chunk(job, c, buf));
  }
  Status s = co_await write_chunk(job, c, buf);
  if (!s) {
    // qemu-img's words: the offset and, for a system error, what strerror says.
    const Error& e = s.error();
    if (e.sys_errno() != 0) {
      co_return make_error(e.code(),
                           strfmt("error while writing at byte %llu: %s", (unsigned long long)c.off,
                                  std::strerror(e.sys_errno())),
                           e.sys_errno());
    }
    co_return Unexpected(std::move(s).error().prepend(
        strfmt("error while writing at byte %llu", (unsigned long long)c.off)));
  }
  co_return Status{};
}

// After chunk c was written: the next writer in order may go.
void chunk_written(ConvertJob& job, const Chunk& c) {
  if (!job.opts.in_order) return;
  job.written_to = c.off + c.len;
  auto it = job.waiting.find(job.written_to);
  if (it != job.waiting.end()) {
    job.loop.post(it->second);
    job.waiting.erase(it);
  }
}

Task<void> worker(ConvertJob& job) {
  void* raw = std::aligned_alloc(kBufferAlign, job.chunk_size);
  AlignedBuffer buf(static_cast<uint8_t*>(raw));
  if (!buf) job.fail(Error(ErrorCode::kNoSpace, "convert: out of memory for chunk buffers"));
  while (!job.error) {
    std::optional<Chunk> c;
    {
      auto guard = co_await job.lock.lock();
      auto r = co_await next_chunk(job);
      if (!r) {
        job.fail(std::move(r).error());
        break;
      }
      c = *r;
    }
    if (!c) break;
    Status s = co_await copy_chunk(job, *c, buf.get());
    if (!s) {
      job.fail(std::move(s).error());
      break;
    }
    chunk_written(job, *c);
    job.done += c->len;
    if (job.opts.progress) job.opts.progress(job.done, job.total);
  }
  if (--job.running == 0 && job.waiter) job.loop.post(job.waiter);
}

}  // namespace

Task<Result<ConvertStats>> convert(IoLoop& loop, std::span<BlockDriver* const> sources,
                                   BlockDriver& dst, const ConvertOptions& opts) {
  if (opts.chunk_size == 0 || opts.chunk_size % kBufferAlign != 0) {
    co_return invalid_argument(strfmt("convert: chunk size %llu is not a multiple of 4096",
                                      (unsigned long long)opts.chunk_size));
  }
  if (opts.min_sparse % 512 != 0) {
    co_return invalid_argument("convert: min_sparse must be a multiple of 512");
  }
  Concat src(sources);
  if (dst.size() < src.size()) {
    co_return invalid_argument(
        strfmt("convert: destination (%llu bytes) is smaller than the source (%llu bytes)",
               (unsigned long long)dst.size(), (unsigned long long)src.size()));
  }
  ConvertJob job(loop, src, dst, opts);
  job.chunk_size = opts.chunk_size;
  job.alignment = sparse_alignment(opts.min_sparse);
  job.copy_range = opts.copy_range && !opts.compress;
  if (opts.compress) {
    job.cluster = dst.compressed_cluster_size();
    if (job.cluster == 0) co_return not_supported("Compression not supported for this file format");
    job.chunk_size =
        align_up(std::max(job.chunk_size, job.cluster), std::max(job.cluster, kBufferAlign));
  }
  job.total = src.size();
  if (opts.progress) opts.progress(0, job.total);
  unsigned workers = std::clamp(opts.in_flight, 1u, 16u);
  job.running = workers;
  for (unsigned i = 0; i < workers; ++i) loop.spawn(worker(job));
  co_await AllDone{job};
  if (job.error) co_return Unexpected(std::move(*job.error));
  CO_RETURN_IF_ERROR(co_await dst.flush());
  co_return job.stats;
}

Task<Result<ConvertStats>> convert(IoLoop& loop, BlockDriver& src, BlockDriver& dst,
                                   const ConvertOptions& opts) {
  BlockDriver* one[] = {&src};
  co_return co_await convert(loop, std::span<BlockDriver* const>(one), dst, opts);
}

bool is_zero(const void* p, size_t len) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  // Check the first bytes cheaply, then compare the buffer with itself shifted by 16 bytes:
  // memcmp runs vectorised, and a buffer equal to its own shift whose head is zero is all zero.
  size_t head = std::min<size_t>(len, 16);
  for (size_t i = 0; i < head; ++i) {
    if (b[i]) return false;
  }
  if (len <= 16) return true;
  return std::memcmp(b, b + 16, len - 16) == 0;
}

}  // namespace img
