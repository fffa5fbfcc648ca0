// HostFile: a host file driven through the IoLoop's io_uring, with O_DIRECT support.
//
// O_DIRECT needs aligned buffers, offsets and lengths; callers (metadata updates of a few bytes,
// guest buffers anywhere in memory) need not provide them, so unaligned requests bounce through an
// aligned buffer, as QEMU's block layer does (host_file_bounce.cc). What makes that safe under
// concurrency:
//   - a bounced write holds its blocks exclusively in range_lock_ from the read of its edge blocks
//     to its write, and every other write, discard and fallocate on the file holds its range
//     shared, so no read-modify-write writes back a block someone changed in between;
//   - the file is never truncated: a bounced write whose last block would reach past both the end
//     of the file and its own end writes that block's bytes through buffered_fd_, a second,
//     buffered descriptor of the same inode, which writes exactly them; so the file never grows
//     past what was written and no shrink can cut off a concurrent extension;
//   - a bounce moves at most kMaxBounceBytes at a time, whatever the request's size.
//
// Thread-safety: a File belongs to the thread of its IoLoop.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>
#include <string>

#include "img/file.h"
#include "io/dio_align.h"
#include "io/image_lock.h"
#include "io/range_lock.h"
#include "util/iov.h"

namespace img {

class HostFile final : public File {
 public:
  // The most one bounce buffer holds; larger unaligned requests are bounced chunk by chunk.
  static constexpr uint64_t kMaxBounceBytes = 1 << 20;

  // buffered_fd: the same file opened without O_DIRECT, for direct files open for writing (-1
  // otherwise). HostFile owns both descriptors.
  HostFile(IoLoop& loop, int fd, int buffered_fd, std::string path, bool ro, bool direct);
  ~HostFile() override;

  Task<Result<uint64_t>> readv(uint64_t off, std::span<const iovec> iov) override;
  Task<Status> writev(uint64_t off, std::span<const iovec> iov) override;
  Task<Status> flush() override;
  Task<Status> discard(uint64_t off, uint64_t len) override;
  Task<Status> write_zeroes(uint64_t off, uint64_t len) override;
  Task<Status> allocate(uint64_t off, uint64_t len) override;
  Task<Status> truncate(uint64_t size) override;
  Result<uint64_t> size() override;
  Result<uint64_t> allocated_size() override;
  Result<Extent> extent_at(uint64_t off, uint64_t len) override;
  // The buffered descriptor where there is one: copy_file_range on an O_DIRECT one fails for
  // unaligned ranges on some file systems.
  int host_fd() const override { return buffered_fd_ >= 0 ? buffered_fd_ : fd_; }
  bool read_only() const override { return ro_; }
  const std::string& name() const override { return path_; }
  // On fd_, whose open file lives as long as this HostFile: closing it drops the locks.
  Status lock(uint64_t perm, uint64_t shared) override {
    return image_lock_.acquire(fd_, path_, perm, shared);
  }

  // For tests: the largest bounce buffer any HostFile has allocated since the last reset.
  static uint64_t largest_bounce_alloc();
  static void reset_largest_bounce_alloc();

 private:
  // One vectored read or write of all of iov on fd, resubmitting the rest after a short
  // transfer. A read stops at EOF and zero-fills the rest; returns the bytes transferred.
  Task<Result<uint64_t>> transfer(int fd, bool write, uint64_t off, std::span<const iovec> iov);
  Task<Result<uint64_t>> transfer(int fd, bool write, uint64_t off, void* buf, uint64_t len);
  // Whether iov at off meets O_DIRECT's rules; sets len to its total length.
  bool aligned(uint64_t off, std::span<const iovec> iov, uint64_t& len) const;
  // Runs one fallocate, holding its range shared on a direct file (see range_lock_).
  Task<int> locked_fallocate(int mode, uint64_t off, uint64_t len);
  Task<Status> write_zero_bytes(uint64_t off, uint64_t len);

  // host_file_bounce.cc
  class Bounce;
  Task<Result<uint64_t>> bounce_read(uint64_t off, uint64_t len, std::span<const iovec> iov);
  Task<Status> bounce_write(uint64_t off, uint64_t len, std::span<const iovec> iov);
  Task<Status> bounce_write_chunk(uint64_t off, uint64_t end, IovCursor& src, Bounce& buf);
  // Where the bounce chunk that starts at off (of a request ending at end) ends: its aligned
  // span is at most chunk_ bytes, and every chunk but the last ends on a block boundary.
  uint64_t chunk_end(uint64_t off, uint64_t end) const;

  IoLoop& loop_;
  int fd_;
  int buffered_fd_;
  std::string path_;
  bool ro_;
  bool direct_;
  DioAlign align_;
  uint64_t chunk_ = kMaxBounceBytes;  // bytes of file one bounce chunk spans, a multiple of align
  // Exclusive ranges are widened to whole pages as well as whole blocks: a buffered write dirties
  // a page of the page cache, and an O_DIRECT write into the same page while it is dirty would
  // leave the cache stale.
  uint64_t lock_granule_ = 4096;
  RangeLock range_lock_;
  ImageLock image_lock_;
};

}  // namespace img
