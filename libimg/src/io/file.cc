#include "img/file.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

namespace img {

Task<Result<uint64_t>> File::read(uint64_t off, void* buf, uint64_t len) {
  iovec v{buf, len};
  co_return co_await readv(off, std::span<const iovec>(&v, 1));
}

Task<Status> File::write(uint64_t off, const void* buf, uint64_t len) {
  iovec v{const_cast<void*>(buf), len};
  co_return co_await writev(off, std::span<const iovec>(&v, 1));
}

Task<Status> File::read_exact(uint64_t off, void* buf, uint64_t len, const char* what) {
  CO_ASSIGN_OR_RETURN(uint64_t got, co_await read(off, buf, len));
  if (got != len) {
    co_return corruption(strfmt("%s: %s at offset %llu length %llu is past the end of the file",
                                name().c_str(), what, (unsigned long long)off,
                                (unsigned long long)len));
  }
  co_return Status{};
}

// copy_file_range(2) between the two host descriptors. It runs on the loop thread (io_uring
// has no such operation); the kernel copies page cache to page cache, or shares the blocks on
// file systems that can (XFS, Btrfs reflinks), so no data crosses into user space.
Task<Status> File::copy_range(uint64_t off, File& dst, uint64_t dst_off, uint64_t len) {
  int in = host_fd(), out = dst.host_fd();
  if (in < 0 || out < 0) co_return not_supported("copy offloading needs two host files");
  loff_t in_off = static_cast<loff_t>(off), out_off = static_cast<loff_t>(dst_off);
  while (len > 0) {
    ssize_t n = ::copy_file_range(in, &in_off, out, &out_off, len, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      // Not possible between these two files: the caller falls back to reading and writing.
      if (e == EXDEV || e == EINVAL || e == ENOSYS || e == EOPNOTSUPP || e == EBADF) {
        co_return not_supported("copy_file_range: " + std::string(strerror(e)));
      }
      co_return io_error(e, "copy_file_range " + name() + " -> " + dst.name());
    }
    // 0: the source ended early; its bytes past the end read as zeros, which copying cannot do.
    if (n == 0) co_return not_supported("copy_file_range: source ends before the range");
    len -= static_cast<uint64_t>(n);
  }
  co_return Status{};
}

}  // namespace img
