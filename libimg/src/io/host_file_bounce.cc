// The bounce of unaligned O_DIRECT requests (see host_file.h for why it is shaped this way).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "img/bytes.h"
#include "io/host_file.h"

namespace img {
namespace {

std::atomic<uint64_t> largest_bounce{0};

void note_bounce_alloc(uint64_t n) {
  uint64_t cur = largest_bounce.load(std::memory_order_relaxed);
  while (n > cur && !largest_bounce.compare_exchange_weak(cur, n, std::memory_order_relaxed)) {
  }
}

}  // namespace

uint64_t HostFile::largest_bounce_alloc() { return largest_bounce.load(); }
void HostFile::reset_largest_bounce_alloc() { largest_bounce.store(0); }

// One aligned buffer, reused by every chunk of a request.
class HostFile::Bounce {
 public:
  Bounce(uint64_t n, uint32_t mem_align) {
    uint64_t a = std::max<uint32_t>(mem_align, 4096);
    size_ = align_up(n, a);
    p_ = static_cast<uint8_t*>(std::aligned_alloc(a, size_));
    if (p_) note_bounce_alloc(size_);
  }
  ~Bounce() { std::free(p_); }
  Bounce(const Bounce&) = delete;
  Bounce& operator=(const Bounce&) = delete;
  uint8_t* get() const { return p_; }

 private:
  uint8_t* p_;
  uint64_t size_;
};

uint64_t HostFile::chunk_end(uint64_t off, uint64_t end) const {
  return std::min(end, align_down(off, align_.offset) + chunk_);
}

Task<Result<uint64_t>> HostFile::bounce_read(uint64_t off, uint64_t len,
                                             std::span<const iovec> iov) {
  if (len == 0) co_return 0;
  const uint64_t end = off + len;
  const uint64_t a0 = align_down(off, align_.offset);
  Bounce buf(std::min(align_up(end, align_.offset) - a0, chunk_), align_.mem);
  if (!buf.get()) co_return io_error(ENOMEM, "read " + path_);
  IovCursor dst(iov);
  uint64_t from_file = 0;
  for (uint64_t pos = off; pos < end;) {
    uint64_t cend = chunk_end(pos, end);
    uint64_t a = align_down(pos, align_.offset), b = align_up(cend, align_.offset);
    CO_ASSIGN_OR_RETURN(uint64_t got, co_await transfer(fd_, false, a, buf.get(), b - a));
    dst.scatter(buf.get() + (pos - a), cend - pos);
    // Bytes of [pos, cend) that came from the file; after a short chunk, the rest is past EOF.
    uint64_t here = got > pos - a ? std::min(got - (pos - a), cend - pos) : 0;
    from_file += here;
    if (here < cend - pos) {
      dst.zero(end - cend);
      break;
    }
    pos = cend;
  }
  co_return from_file;
}

Task<Status> HostFile::bounce_write(uint64_t off, uint64_t len, std::span<const iovec> iov) {
  if (len == 0) co_return Status{};
  const uint64_t end = off + len;
  const uint64_t a0 = align_down(off, align_.offset);
  Bounce buf(std::min(align_up(end, align_.offset) - a0, chunk_), align_.mem);
  if (!buf.get()) co_return io_error(ENOMEM, "write " + path_);
  IovCursor src(iov);
  // Chunk by chunk, each under its own lock: a large request is not atomic (no write is), and
  // holding only one chunk's blocks lets other writes proceed around it.
  for (uint64_t pos = off; pos < end;) {
    uint64_t cend = chunk_end(pos, end);
    CO_RETURN_IF_ERROR(co_await bounce_write_chunk(pos, cend, src, buf));
    pos = cend;
  }
  co_return Status{};
}

Task<Status> HostFile::bounce_write_chunk(uint64_t off, uint64_t end, IovCursor& src, Bounce& buf) {
  const uint64_t blk = align_.offset;
  const uint64_t a = align_down(off, blk), b = align_up(end, blk);
  RangeLock::Holder held;
  co_await range_lock_.lock(held, align_down(off, lock_granule_), align_up(end, lock_granule_),
                            true);
  // Decided under the lock; the file can only grow meanwhile (a shrink would be the caller's
  // own concurrent truncate), and growing beyond b changes nothing below.
  CO_ASSIGN_OR_RETURN(uint64_t eof, size());
  // The last block, when it reaches past both this write's end and the file's, must not be
  // written whole: that would grow the file past what was written. Its bytes go through the
  // buffered descriptor, which writes exactly them and keeps the rest of the block.
  uint64_t direct_end = b;
  if (b > end && b > eof) direct_end = std::max(a, b - blk);
  uint8_t* p = buf.get();
  // Read-modify-write of the edge blocks the direct part covers only in part; the middle is
  // overwritten and need not be read.
  if (direct_end > a) {
    if (off > a) {
      CO_ASSIGN_OR_RETURN(uint64_t got, co_await transfer(fd_, false, a, p, blk));
      (void)got;  // past EOF reads as zeros
    }
    uint64_t tail = direct_end - blk;
    if (end < direct_end && !(tail == a && off > a)) {
      CO_ASSIGN_OR_RETURN(uint64_t got, co_await transfer(fd_, false, tail, p + (tail - a), blk));
      (void)got;
    }
  }
  src.gather(p + (off - a), end - off);
  if (direct_end > a) {
    CO_ASSIGN_OR_RETURN(uint64_t n, co_await transfer(fd_, true, a, p, direct_end - a));
    (void)n;
  }
  // After the direct part, so the buffered write's page is read back with the direct data in it.
  uint64_t from = std::max(off, direct_end);
  if (end > from) {
    CO_ASSIGN_OR_RETURN(uint64_t n,
                        co_await transfer(buffered_fd_, true, from, p + (from - a), end - from));
    (void)n;
  }
  co_return Status{};
}

}  // namespace img
