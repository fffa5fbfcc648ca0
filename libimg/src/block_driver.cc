#include "img/block_driver.h"

namespace img {

uint64_t iov_length(std::span<const iovec> iov) {
  uint64_t n = 0;
  for (const iovec& v : iov) n += v.iov_len;
  return n;
}

Task<Status> BlockDriver::read(uint64_t off, void* buf, uint64_t len) {
  iovec v{buf, len};
  co_return co_await readv(off, std::span<const iovec>(&v, 1));
}

Task<Status> BlockDriver::write(uint64_t off, const void* buf, uint64_t len) {
  iovec v{const_cast<void*>(buf), len};
  co_return co_await writev(off, std::span<const iovec>(&v, 1));
}

Task<Status> BlockDriver::write_compressed(uint64_t, const void*, uint64_t) {
  co_return not_supported(
      strfmt("compressed writes are not supported by the %s format", format_name()));
}

Task<Status> BlockDriver::copy_range_to(uint64_t, BlockDriver&, uint64_t, uint64_t) {
  co_return not_supported(
      strfmt("copy offloading is not supported by the %s format", format_name()));
}

Task<Status> BlockDriver::resize(uint64_t new_size, const ResizeOptions& opts) {
  (void)new_size;
  (void)opts;
  // qemu-img's words for a driver without truncate.
  co_return not_supported(strfmt("%s: This image does not support resize", format_name()));
}

Task<Status> BlockDriver::make_empty() {
  co_return not_supported(strfmt("emptying is not supported by the %s format", format_name()));
}

Task<Status> BlockDriver::set_backing_file(const std::string&, const std::string&) {
  co_return not_supported(strfmt("the %s format cannot record a backing file", format_name()));
}

Status BlockDriver::check_range(const char* op, uint64_t off, uint64_t len) const {
  uint64_t sz = size();
  if (off > sz || len > sz - off) {
    return invalid_argument(strfmt("%s of %llu bytes at offset %llu is outside the image (size %llu)",
                                   op, (unsigned long long)len, (unsigned long long)off,
                                   (unsigned long long)sz));
  }
  return {};
}

}  // namespace img
