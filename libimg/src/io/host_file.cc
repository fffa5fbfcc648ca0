// A host file driven through the IoLoop's io_uring.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "img/file.h"

namespace img {
namespace {

constexpr unsigned kMaxIov = 1024;  // IOV_MAX

class HostFile final : public File {
 public:
  HostFile(IoLoop& loop, int fd, std::string path, bool ro)
      : loop_(loop), fd_(fd), path_(std::move(path)), ro_(ro) {}
  ~HostFile() override { ::close(fd_); }

  Task<Result<uint64_t>> readv(uint64_t off, std::span<const iovec> iov) override {
    uint64_t total = 0;
    for (auto& v : iov) total += v.iov_len;
    uint64_t done = 0;
    // Walk the iovec array, resubmitting after short reads until EOF.
    std::vector<iovec> rest(iov.begin(), iov.end());
    size_t first = 0;
    while (done < total) {
      unsigned cnt = std::min<size_t>(rest.size() - first, kMaxIov);
      int r = co_await loop_.readv(fd_, rest.data() + first, cnt, off + done);
      if (r == -EINTR || r == -EAGAIN) continue;
      if (r < 0) co_return io_error(-r, "read " + path_);
      if (r == 0) break;  // EOF
      done += r;
      advance(rest, first, r);
    }
    if (done < total) zero_rest(rest, first);
    co_return done;
  }

  Task<Status> writev(uint64_t off, std::span<const iovec> iov) override {
    if (ro_) co_return read_only_error(path_ + " is open read-only");
    uint64_t total = 0;
    for (auto& v : iov) total += v.iov_len;
    uint64_t done = 0;
    std::vector<iovec> rest(iov.begin(), iov.end());
    size_t first = 0;
    while (done < total) {
      unsigned cnt = std::min<size_t>(rest.size() - first, kMaxIov);
      int r = co_await loop_.writev(fd_, rest.data() + first, cnt, off + done);
      if (r == -EINTR || r == -EAGAIN) continue;
      if (r < 0) co_return io_error(-r, "write " + path_);
      if (r == 0) co_return io_error(EIO, "write " + path_ + " made no progress");
      done += r;
      advance(rest, first, r);
    }
    co_return Status{};
  }

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
  return std::unique_ptr<File>(new HostFile(loop, fd, path, opts.read_only));
}

}  // namespace img
