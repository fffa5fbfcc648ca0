#include "img/file.h"

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

}  // namespace img
