// convert: copies an image chunk by chunk with many chunks in flight on one IoLoop.
//
// Each worker coroutine takes the next chunk, asks the source what the chunk holds
// (block_status), reads only data ranges, and writes only the parts that are not zero; zero
// ranges are skipped on a fresh destination or written as zeros otherwise (qemu-img convert -S).
// With compression (-c) a chunk is whole destination clusters: it is read in full, and each
// cluster that is not all zeros is written compressed (the driver compresses on a thread pool,
// so the chunks in flight keep every core busy), as qemu-img convert -c does.
#include <algorithm>
#include <coroutine>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "img/bytes.h"
#include "img/ops.h"

namespace img {
namespace {

constexpr uint64_t kBufferAlign = 4096;  // O_DIRECT on either side needs aligned buffers

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, AlignedFree>;

// Shared state of one convert: the next chunk, the first error, and the workers still running.
struct ConvertJob {
  IoLoop& loop;
  BlockDriver& src;
  BlockDriver& dst;
  const ConvertOptions& opts;
  uint64_t chunk_size = 0;
  uint64_t total = 0;
  uint64_t next = 0;
  uint64_t done = 0;
  ConvertStats stats;
  std::optional<Error> error;
  unsigned running = 0;
  std::coroutine_handle<> waiter;  // resumed when running drops to 0
};

// Awaitable: suspends until every worker finished.
struct AllDone {
  ConvertJob& job;
  bool await_ready() const noexcept { return job.running == 0; }
  void await_suspend(std::coroutine_handle<> h) { job.waiter = h; }
  void await_resume() const noexcept {}
};

// Writes buf (holding [off, off+len) of the image) to dst, leaving out zero runs of at least
// min_sparse bytes aligned to min_sparse.
Task<Status> write_data(ConvertJob& job, uint64_t off, const uint8_t* buf, uint64_t len) {
  const uint64_t granule = job.opts.min_sparse;
  if (granule == 0) {
    CO_RETURN_IF_ERROR(co_await job.dst.write(off, buf, len));
    job.stats.bytes_written += len;
    co_return Status{};
  }
  uint64_t pos = 0;
  while (pos < len) {
    // One run of granules that are all zero or all not, cut at granule boundaries of the image.
    auto piece_end = [&](uint64_t p) {
      uint64_t boundary = ((off + p) / granule + 1) * granule - off;
      return std::min(boundary, len);
    };
    uint64_t end = piece_end(pos);
    bool zero = is_zero(buf + pos, end - pos);
    while (end < len) {
      uint64_t e = piece_end(end);
      if (is_zero(buf + end, e - end) != zero) break;
      end = e;
    }
    uint64_t n = end - pos;
    if (zero) {
      job.stats.bytes_zero += n;
      if (!job.opts.target_is_zero) {
        CO_RETURN_IF_ERROR(co_await job.dst.write_zeroes(off + pos, n, {.may_unmap = true}));
      }
    } else {
      CO_RETURN_IF_ERROR(co_await job.dst.write(off + pos, buf + pos, n));
      job.stats.bytes_written += n;
    }
    pos = end;
  }
  co_return Status{};
}

// Copies one chunk [off, off+len).
Task<Status> copy_chunk(ConvertJob& job, uint64_t off, uint64_t len, uint8_t* buf) {
  uint64_t pos = 0;
  while (pos < len) {
    CO_ASSIGN_OR_RETURN(BlockStatus st, co_await job.src.block_status(off + pos, len - pos));
    // A driver that reports no length: treat the rest of the chunk as data.
    uint64_t n = st.length == 0 ? len - pos : std::min(st.length, len - pos);
    bool zero = st.length != 0 && st.reads_as_zero();
    if (zero) {
      job.stats.bytes_zero += n;
      if (!job.opts.target_is_zero) {
        CO_RETURN_IF_ERROR(co_await job.dst.write_zeroes(off + pos, n, {.may_unmap = true}));
      }
    } else {
      CO_RETURN_IF_ERROR(co_await job.src.read(off + pos, buf + pos, n));
      job.stats.bytes_read += n;
      CO_RETURN_IF_ERROR(co_await write_data(job, off + pos, buf + pos, n));
    }
    pos += n;
  }
  co_return Status{};
}

// Copies one chunk [off, off+len) of whole destination clusters, compressed.
Task<Status> copy_chunk_compressed(ConvertJob& job, uint64_t off, uint64_t len, uint8_t* buf) {
  const uint64_t cs = job.dst.compressed_cluster_size();
  // Bytes of each cluster that block_status reported as zeros: such clusters are zero ranges.
  std::vector<uint64_t> zero_bytes(div_round_up(len, cs), 0);
  uint64_t pos = 0;
  while (pos < len) {
    CO_ASSIGN_OR_RETURN(BlockStatus st, co_await job.src.block_status(off + pos, len - pos));
    uint64_t n = st.length == 0 ? len - pos : std::min(st.length, len - pos);
    if (st.length != 0 && st.reads_as_zero()) {
      std::memset(buf + pos, 0, n);
      for (uint64_t p = pos; p < pos + n;) {
        uint64_t stop = std::min(pos + n, (p / cs + 1) * cs);
        zero_bytes[p / cs] += stop - p;
        p = stop;
      }
    } else {
      CO_RETURN_IF_ERROR(co_await job.src.read(off + pos, buf + pos, n));
      job.stats.bytes_read += n;
    }
    pos += n;
  }
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
    // Compressed clusters are written whole, so only a cluster that is all zeros is skipped
    // (qemu-img convert -c); -S 0 writes even those, unless the source says they are zeros.
    bool zero = zero_bytes[c / cs] == n || (job.opts.min_sparse != 0 && is_zero(buf + c, n));
    if (!zero) {
      if (run_len == 0) run_start = c;
      run_len += n;
      continue;
    }
    CO_RETURN_IF_ERROR(co_await flush_run());
    job.stats.bytes_zero += n;
    if (!job.opts.target_is_zero) {
      CO_RETURN_IF_ERROR(co_await job.dst.write_zeroes(off + c, n, {.may_unmap = true}));
    }
  }
  // A destination larger than the source (its size rounded up to whole sectors) ends with a
  // partial cluster that a compressed write must cover up to the image end: the rest is zeros.
  uint64_t dst_end = job.dst.size();
  if (run_len > 0 && off + run_start + run_len == job.total && job.total < dst_end) {
    uint64_t end = std::min(align_up(run_start + run_len, cs), dst_end - off);
    std::memset(buf + run_start + run_len, 0, end - run_start - run_len);
    run_len = end - run_start;
  }
  CO_RETURN_IF_ERROR(co_await flush_run());
  co_return Status{};
}

Task<void> worker(ConvertJob& job) {
  void* raw = std::aligned_alloc(kBufferAlign, job.chunk_size);
  AlignedBuffer buf(static_cast<uint8_t*>(raw));
  if (!buf) job.error = Error(ErrorCode::kNoSpace, "convert: out of memory for chunk buffers");
  while (!job.error && job.next < job.total) {
    uint64_t off = job.next;
    uint64_t len = std::min(job.chunk_size, job.total - off);
    job.next += len;
    // Not `cond ? co_await a : co_await b`: g++ 12 destroys that result twice on error.
    Status s;
    if (job.opts.compress) {
      s = co_await copy_chunk_compressed(job, off, len, buf.get());
    } else {
      s = co_await copy_chunk(job, off, len, buf.get());
    }
    if (!s) {
      if (!job.error) job.error = std::move(s).error();
      break;
    }
    job.done += len;
    if (job.opts.progress) job.opts.progress(job.done, job.total);
  }
  if (--job.running == 0 && job.waiter) job.loop.post(job.waiter);
}

}  // namespace

Task<Result<ConvertStats>> convert(IoLoop& loop, BlockDriver& src, BlockDriver& dst,
                                   const ConvertOptions& opts) {
  if (opts.chunk_size == 0 || opts.chunk_size % kBufferAlign != 0) {
    co_return invalid_argument(strfmt("convert: chunk size %llu is not a multiple of 4096",
                                      (unsigned long long)opts.chunk_size));
  }
  if (dst.size() < src.size()) {
    co_return invalid_argument(
        strfmt("convert: destination (%llu bytes) is smaller than the source (%llu bytes)",
               (unsigned long long)dst.size(), (unsigned long long)src.size()));
  }
  ConvertJob job{.loop = loop, .src = src, .dst = dst, .opts = opts};
  job.chunk_size = opts.chunk_size;
  if (opts.compress) {
    uint64_t cs = dst.compressed_cluster_size();
    if (cs == 0) co_return not_supported("Compression not supported for this file format");
    job.chunk_size = align_up(std::max(job.chunk_size, cs), std::max(cs, kBufferAlign));
  }
  job.total = src.size();
  if (opts.progress) opts.progress(0, job.total);
  uint64_t chunks = (job.total + job.chunk_size - 1) / job.chunk_size;
  unsigned workers =
      static_cast<unsigned>(std::min<uint64_t>(std::max(opts.in_flight, 1u), chunks));
  job.running = workers;
  for (unsigned i = 0; i < workers; ++i) loop.spawn(worker(job));
  co_await AllDone{job};
  if (job.error) co_return Unexpected(std::move(*job.error));
  CO_RETURN_IF_ERROR(co_await dst.flush());
  co_return job.stats;
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
