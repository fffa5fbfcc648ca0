// A host file driven through the IoLoop's io_uring.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "img/file.h"
#include "img/bytes.h"
#include "io/dio_align.h"
#include "util/async.h"

namespace img {
namespace {

constexpr unsigned kMaxIov = 1024;  // IOV_MAX

class HostFile final : public File {
 public:
  HostFile(IoLoop& loop, int fd, std::string path, bool ro, bool direct)
      : loop_(loop), fd_(fd), path_(std::move(path)), ro_(ro), direct_(direct), rmw_mu_(loop) {
    if (direct_) align_ = query_dio_align(fd_);
  }
  ~HostFile() override { ::close(fd_); }

  Task<Result<uint64_t>> readv(uint64_t off, std::span<const iovec> iov) override {
    if (direct_ && !aligned(off, iov)) co_return co_await bounce_read(off, iov);
    co_return co_await raw_readv(off, iov);
  }

  Task<Status> writev(uint64_t off, std::span<const iovec> iov) override {
    if (ro_) co_return read_only_error(path_ + " is open read-only");
    if (direct_ && !aligned(off, iov)) co_return co_await bounce_write(off, iov);
    co_return co_await raw_writev(off, iov);
  }

 private:
  Task<Result<uint64_t>> raw_readv(uint64_t off, std::span<const iovec> iov) {
    co_return co_await transfer(false, off, iov);
  }
  Task<Status> raw_writev(uint64_t off, std::span<const iovec> iov) {
    CO_ASSIGN_OR_RETURN(uint64_t n, co_await transfer(true, off, iov));
    (void)n;
    co_return Status{};
  }

  // One vectored read or write of all of iov, resubmitting the rest after a short transfer.
  // A read stops at EOF and zero-fills the rest; returns the bytes transferred.
  Task<Result<uint64_t>> transfer(bool write, uint64_t off, std::span<const iovec> iov) {
    uint64_t total = 0;
    for (auto& v : iov) total += v.iov_len;
    const char* what = write ? "write " : "read ";
    uint64_t done = 0;
    // Common case: one submission of the caller's own array does it all, with no copy.
    if (iov.size() <= kMaxIov) {
      int r = write ? co_await loop_.writev(fd_, iov.data(), iov.size(), off)
                    : co_await loop_.readv(fd_, iov.data(), iov.size(), off);
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
      unsigned cnt = std::min<size_t>(rest.size() - first, kMaxIov);
      int r = write ? co_await loop_.writev(fd_, rest.data() + first, cnt, off + done)
                    : co_await loop_.readv(fd_, rest.data() + first, cnt, off + done);
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

  // O_DIRECT needs aligned buffers, offsets and lengths; callers (metadata updates of a few
  // bytes, guest buffers anywhere in memory) need not provide them, so unaligned requests go
  // through an aligned bounce buffer here, as QEMU's block layer does.
  bool aligned(uint64_t off, std::span<const iovec> iov) const {
    if (off % align_.offset) return false;
    for (const iovec& v : iov) {
      if (reinterpret_cast<uintptr_t>(v.iov_base) % align_.mem || v.iov_len % align_.offset) {
        return false;
      }
    }
    return true;
  }

  struct Bounce {
    explicit Bounce(uint64_t n, uint32_t a) : p(static_cast<uint8_t*>(std::aligned_alloc(a, n))) {}
    ~Bounce() { std::free(p); }
    uint8_t* p;
  };

  Task<Result<uint64_t>> bounce_read(uint64_t off, std::span<const iovec> iov) {
    uint64_t len = 0;
    for (auto& v : iov) len += v.iov_len;
    uint64_t a = align_down(off, align_.offset), b = align_up(off + len, align_.offset);
    Bounce buf(b - a, std::max<uint32_t>(align_.mem, 4096));
    if (!buf.p) co_return io_error(ENOMEM, "read " + path_);
    iovec one{buf.p, b - a};
    CO_ASSIGN_OR_RETURN(uint64_t got, co_await raw_readv(a, std::span<const iovec>(&one, 1)));
    uint64_t pos = off - a;
    for (const iovec& v : iov) {
      std::memcpy(v.iov_base, buf.p + pos, v.iov_len);
      pos += v.iov_len;
    }
    // Bytes of [off, off+len) that came from the file.
    uint64_t from_file = got > off - a ? std::min(got - (off - a), len) : 0;
    co_return from_file;
  }

  Task<Status> bounce_write(uint64_t off, std::span<const iovec> iov) {
    uint64_t len = 0;
    for (auto& v : iov) len += v.iov_len;
    uint64_t a = align_down(off, align_.offset), b = align_up(off + len, align_.offset);
    Bounce buf(b - a, std::max<uint32_t>(align_.mem, 4096));
    if (!buf.p) co_return io_error(ENOMEM, "write " + path_);
    // Read-modify-write of the edge blocks; one at a time, so two small writes into one block
    // (two L1 entries, say) cannot undo each other.
    auto guard = co_await rmw_mu_.lock();
    CO_ASSIGN_OR_RETURN(uint64_t old_size, size());
    if (a != off || b != off + len) {
      iovec one{buf.p, b - a};
      CO_ASSIGN_OR_RETURN(uint64_t got, co_await raw_readv(a, std::span<const iovec>(&one, 1)));
      (void)got;
    }
    uint64_t pos = off - a;
    for (const iovec& v : iov) {
      std::memcpy(buf.p + pos, v.iov_base, v.iov_len);
      pos += v.iov_len;
    }
    iovec one{buf.p, b - a};
    CO_RETURN_IF_ERROR(co_await raw_writev(a, std::span<const iovec>(&one, 1)));
    // Writing whole blocks may have grown the file past the end the caller wrote to.
    if (b > old_size && b > off + len) {
      if (::ftruncate(fd_, static_cast<off_t>(std::max(old_size, off + len))) < 0) {
        co_return io_error(errno, "truncate " + path_);
      }
    }
    co_return Status{};
  }

 public:
  Task<Status> flush() override {
    if (ro_) co_return Status{};
    int r = co_await loop_.fsync(fd_, true);
    if (r < 0) co_return io_error(-r, "fdatasync " + path_);
    co_return Status{};
  }

  Task<Status> discard(uint64_t off, uint64_t len) override {
    if (ro_) co_return read_only_error(path_ + " is open read-only");
    if (len == 0) co_return Status{};
    int r = co_await loop_.fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
    if (r == -EOPNOTSUPP) co_return co_await write_zero_bytes(off, len);
    if (r < 0) co_return io_error(-r, "punch hole in " + path_);
    co_return Status{};
  }

  Task<Status> write_zeroes(uint64_t off, uint64_t len) override {
    if (ro_) co_return read_only_error(path_ + " is open read-only");
    if (len == 0) co_return Status{};
    int r = co_await loop_.fallocate(fd_, FALLOC_FL_ZERO_RANGE, off, len);
    if (r == 0) co_return Status{};
    if (r != -EOPNOTSUPP && r != -EINVAL) co_return io_error(-r, "zero range in " + path_);
    co_return co_await write_zero_bytes(off, len);
  }

  Task<Status> allocate(uint64_t off, uint64_t len) override {
    if (ro_) co_return read_only_error(path_ + " is open read-only");
    if (len == 0) co_return Status{};
    int r = co_await loop_.fallocate(fd_, 0, off, len);
    if (r == -EOPNOTSUPP) co_return co_await write_zero_bytes(off, len);
    if (r < 0) co_return io_error(-r, "fallocate " + path_);
    co_return Status{};
  }

  Task<Status> truncate(uint64_t size) override {
    if (ro_) co_return read_only_error(path_ + " is open read-only");
    if (::ftruncate(fd_, static_cast<off_t>(size)) < 0) co_return io_error(errno, "truncate " + path_);
    co_return Status{};
  }

  Result<uint64_t> size() override {
    struct stat st;
    if (fstat(fd_, &st) < 0) return io_error(errno, "stat " + path_);
    if (S_ISBLK(st.st_mode)) {
      off_t end = lseek(fd_, 0, SEEK_END);
      if (end < 0) return io_error(errno, "seek " + path_);
      return static_cast<uint64_t>(end);
    }
    return static_cast<uint64_t>(st.st_size);
  }

  Result<uint64_t> allocated_size() override {
    struct stat st;
    if (fstat(fd_, &st) < 0) return io_error(errno, "stat " + path_);
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }

  bool read_only() const override { return ro_; }
  const std::string& name() const override { return path_; }

 private:
  static void advance(std::vector<iovec>& v, size_t& first, uint64_t n) {
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
  static void zero_rest(std::vector<iovec>& v, size_t first) {
    for (size_t i = first; i < v.size(); ++i) std::memset(v[i].iov_base, 0, v[i].iov_len);
  }

  Task<Status> write_zero_bytes(uint64_t off, uint64_t len) {
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

  IoLoop& loop_;
  int fd_;
  std::string path_;
  bool ro_;
  bool direct_;
  DioAlign align_;
  AsyncMutex rmw_mu_;
};

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
  return std::unique_ptr<File>(new HostFile(loop, fd, path, opts.read_only, opts.direct));
}

}  // namespace img
