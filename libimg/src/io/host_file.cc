// HostFile: the plain (buffered, or aligned O_DIRECT) paths and opening; the bounce of unaligned
// O_DIRECT requests is in host_file_bounce.cc.
#include "io/host_file.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "img/bytes.h"

namespace img {
namespace {

constexpr unsigned kMaxIov = 1024;  // IOV_MAX

void advance(std::vector<iovec>& v, size_t& first, uint64_t n) {
  while (n > 0 && first < v.size()) {
    if (n >= v[first].iov_len) {
      n -= v[first].iov_len;
      ++first;
    } else {
      v[first].iov_base = static_cast<char*>(v[first].iov_base) + n;
      v[first].iov_len -= n;
      n = 0;
    }
  }
}

void zero_rest(std::vector<iovec>& v, size_t first) {
  for (size_t i = first; i < v.size(); ++i) std::memset(v[i].iov_base, 0, v[i].iov_len);
}

}  // namespace

HostFile::HostFile(IoLoop& loop, int fd, int buffered_fd, std::string path, bool ro, bool direct)
    : loop_(loop),
      fd_(fd),
      buffered_fd_(buffered_fd),
      path_(std::move(path)),
      ro_(ro),
      direct_(direct),
      range_lock_(loop) {
  if (direct_) {
    align_ = query_dio_align(fd_);
    uint64_t a = align_.offset;
    chunk_ = std::max<uint64_t>(kMaxBounceBytes / a * a, a);
    lock_granule_ = std::max<uint64_t>(a, sysconf(_SC_PAGESIZE));
  }
}

HostFile::~HostFile() {
  ::close(fd_);
  if (buffered_fd_ >= 0) ::close(buffered_fd_);
}

Task<Result<uint64_t>> HostFile::readv(uint64_t off, std::span<const iovec> iov) {
  uint64_t len;
  // Reads need no lock: a read that overlaps a concurrent write may see either, as on any disk.
  if (direct_ && !aligned(off, iov, len)) co_return co_await bounce_read(off, len, iov);
  co_return co_await transfer(fd_, false, off, iov);
}

Task<Status> HostFile::writev(uint64_t off, std::span<const iovec> iov) {
  if (ro_) co_return read_only_error(path_ + " is open read-only");
  RangeLock::Holder held;
  if (direct_) {
    uint64_t len;
    if (!aligned(off, iov, len)) co_return co_await bounce_write(off, len, iov);
    // Shared: aligned writes run in parallel, but not inside a bounce's read-modify-write.
    if (len > 0) co_await range_lock_.lock(held, off, off + len, false);
  }
  CO_ASSIGN_OR_RETURN(uint64_t n, co_await transfer(fd_, true, off, iov));
  (void)n;
  co_return Status{};
}

Task<Result<uint64_t>> HostFile::transfer(int fd, bool write, uint64_t off, void* buf,
                                          uint64_t len) {
  iovec one{buf, len};
  co_return co_await transfer(fd, write, off, std::span<const iovec>(&one, 1));
}

Task<Result<uint64_t>> HostFile::transfer(int fd, bool write, uint64_t off,
                                          std::span<const iovec> iov) {
  uint64_t total = 0;
  for (auto& v : iov) total += v.iov_len;
  const char* what = write ? "write " : "read ";
  uint64_t done = 0;
  // Common case: one submission of the caller's own array does it all, with no copy.
  if (iov.size() <= kMaxIov) {
    int r = write ? co_await loop_.writev(fd, iov.data(), iov.size(), off)
                  : co_await loop_.readv(fd, iov.data(), iov.size(), off);
    if (r >= 0 && uint64_t(r) == total) co_return total;
    if (r < 0 && r != -EINTR && r != -EAGAIN) co_return io_error(-r, what + path_);
    if (r == 0 && !write) {  // at or past EOF
      for (const iovec& v : iov) std::memset(v.iov_base, 0, v.iov_len);
      co_return 0;
    }
    if (r > 0) done = r;
  }
  std::vector<iovec> rest(iov.begin(), iov.end());
  size_t first = 0;
  advance(rest, first, done);
  while (done < total) {
    // A short O_DIRECT read ended at EOF inside a block. The rest cannot be asked for at an
    // unaligned offset (EINVAL once a concurrent write has moved EOF on), and reads as zeros.
    if (!write && direct_ && fd == fd_ && (off + done) % align_.offset != 0) break;
    unsigned cnt = std::min<size_t>(rest.size() - first, kMaxIov);
    int r = write ? co_await loop_.writev(fd, rest.data() + first, cnt, off + done)
                  : co_await loop_.readv(fd, rest.data() + first, cnt, off + done);
    if (r == -EINTR || r == -EAGAIN) continue;
    if (r < 0) co_return io_error(-r, what + path_);
    if (r == 0) {
      if (write) co_return io_error(EIO, "write " + path_ + " made no progress");
      break;  // EOF
    }
    done += r;
    advance(rest, first, r);
  }
  if (done < total) zero_rest(rest, first);
  co_return done;
}

bool HostFile::aligned(uint64_t off, std::span<const iovec> iov, uint64_t& len) const {
  len = 0;
  bool ok = off % align_.offset == 0;
  for (const iovec& v : iov) {
    len += v.iov_len;
    if (reinterpret_cast<uintptr_t>(v.iov_base) % align_.mem || v.iov_len % align_.offset) {
      ok = false;
    }
  }
  return ok;
}

Task<Status> HostFile::flush() {
  if (ro_) co_return Status{};
  // One inode: this also makes the bytes written through buffered_fd_ durable.
  int r = co_await loop_.fsync(fd_, true);
  if (r < 0) co_return io_error(-r, "fdatasync " + path_);
  co_return Status{};
}

Task<int> HostFile::locked_fallocate(int mode, uint64_t off, uint64_t len) {
  // A hole punched or zeroed inside a bounce's read-modify-write would be written back over.
  RangeLock::Holder held;
  if (direct_) co_await range_lock_.lock(held, off, off + len, false);
  co_return co_await loop_.fallocate(fd_, mode, off, len);
}

Task<Status> HostFile::discard(uint64_t off, uint64_t len) {
  if (ro_) co_return read_only_error(path_ + " is open read-only");
  if (len == 0) co_return Status{};
  int r = co_await locked_fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
  if (r == -EOPNOTSUPP) co_return co_await write_zero_bytes(off, len);
  if (r < 0) co_return io_error(-r, "punch hole in " + path_);
  co_return Status{};
}

Task<Status> HostFile::write_zeroes(uint64_t off, uint64_t len) {
  if (ro_) co_return read_only_error(path_ + " is open read-only");
  if (len == 0) co_return Status{};
  int r = co_await locked_fallocate(FALLOC_FL_ZERO_RANGE, off, len);
  if (r == 0) co_return Status{};
  if (r != -EOPNOTSUPP && r != -EINVAL) co_return io_error(-r, "zero range in " + path_);
  co_return co_await write_zero_bytes(off, len);
}

Task<Status> HostFile::allocate(uint64_t off, uint64_t len) {
  if (ro_) co_return read_only_error(path_ + " is open read-only");
  if (len == 0) co_return Status{};
  int r = co_await locked_fallocate(0, off, len);
  if (r == -EOPNOTSUPP) co_return co_await write_zero_bytes(off, len);
  if (r < 0) co_return io_error(-r, "fallocate " + path_);
  co_return Status{};
}

Task<Status> HostFile::truncate(uint64_t size) {
  if (ro_) co_return read_only_error(path_ + " is open read-only");
  if (::ftruncate(fd_, static_cast<off_t>(size)) < 0)
    co_return io_error(errno, "truncate " + path_);
  co_return Status{};
}

Result<uint64_t> HostFile::size() {
  struct stat st;
  if (fstat(fd_, &st) < 0) return io_error(errno, "stat " + path_);
  if (S_ISBLK(st.st_mode)) {
    off_t end = lseek(fd_, 0, SEEK_END);
    if (end < 0) return io_error(errno, "seek " + path_);
    return static_cast<uint64_t>(end);
  }
  return static_cast<uint64_t>(st.st_size);
}

Result<uint64_t> HostFile::allocated_size() {
  struct stat st;
  if (fstat(fd_, &st) < 0) return io_error(errno, "stat " + path_);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

// SEEK_DATA / SEEK_HOLE (lseek(2)): the kernel answers from the file system's extent map,
// dirty page cache included. A file system without them reports the whole file as data, and so
// do we (EINVAL, or ENXIO past the end read as a hole by lseek's definition).
Result<File::Extent> HostFile::extent_at(uint64_t off, uint64_t len) {
  if (len == 0) return Extent{true, 0};
  off_t at = static_cast<off_t>(off);
  off_t data = ::lseek(fd_, at, SEEK_DATA);
  if (data < 0) {
    // ENXIO: no data at or after off; the rest up to the end of the file is a hole.
    if (errno == ENXIO) return Extent{false, len};
    return Extent{true, len};
  }
  if (data > at) return Extent{false, std::min<uint64_t>(len, static_cast<uint64_t>(data - at))};
  off_t hole = ::lseek(fd_, at, SEEK_HOLE);
  if (hole <= at) return Extent{true, len};
  return Extent{true, std::min<uint64_t>(len, static_cast<uint64_t>(hole - at))};
}

Task<Status> HostFile::write_zero_bytes(uint64_t off, uint64_t len) {
  constexpr uint64_t kChunk = 1 << 20;
  std::vector<char> zeros(std::min(len, kChunk), 0);
  while (len > 0) {
    uint64_t n = std::min<uint64_t>(len, zeros.size());
    CO_RETURN_IF_ERROR(co_await write(off, zeros.data(), n));
    off += n;
    len -= n;
  }
  co_return Status{};
}

namespace {

// The same file without O_DIRECT, for the bytes of a last partial block (see host_file.h). It is
// opened by path, so it is checked to be the same inode.
Result<int> open_buffered_twin(const std::string& path, int direct_fd) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return io_error(errno, "open " + path + " (buffered, for unaligned O_DIRECT tails)");
  struct stat a, b;
  if (fstat(direct_fd, &a) < 0 || fstat(fd, &b) < 0 || a.st_dev != b.st_dev ||
      a.st_ino != b.st_ino) {
    ::close(fd);
    return io_error(ESTALE, path + " was replaced while being opened");
  }
  return fd;
}

}  // namespace

Result<std::unique_ptr<File>> open_host_file(IoLoop& loop, const std::string& path,
                                             FileOpenOptions opts) {
  int flags = O_CLOEXEC | (opts.read_only ? O_RDONLY : O_RDWR);
  if (opts.create) flags |= O_CREAT;
  if (opts.truncate) flags |= O_TRUNC;
  if (opts.direct) flags |= O_DIRECT;
  int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) return io_error(errno, "open " + path);
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    return invalid_argument(path + " is a directory");
  }
  int buffered_fd = -1;
  if (opts.direct && !opts.read_only) {
    auto twin = open_buffered_twin(path, fd);
    if (!twin) {
      ::close(fd);
      return Unexpected(std::move(twin).error());
    }
    buffered_fd = *twin;
  }
  return std::unique_ptr<File>(
      new HostFile(loop, fd, buffered_fd, path, opts.read_only, opts.direct));
}

}  // namespace img
