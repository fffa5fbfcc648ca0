#include "virtio/disk_resize.h"

#include <string>

namespace vmm::virtio {

img::Status check_disk_grow(uint64_t old_size, uint64_t new_size, bool read_only,
                            const char* what) {
  if (read_only) return img::read_only_error(std::string(what) + " is read-only");
  if (new_size % 512 != 0) {
    return img::invalid_argument(
        img::strfmt("the new size %llu is not a multiple of 512", (unsigned long long)new_size));
  }
  if (new_size < old_size) {
    return img::invalid_argument(img::strfmt(
        "shrinking a disk under a running guest (%llu to %llu bytes) would cut off its data: "
        "only growing is supported",
        (unsigned long long)old_size, (unsigned long long)new_size));
  }
  return {};
}

img::Task<img::Status> grow_and_flush(img::BlockDriver& disk, uint64_t new_size) {
  img::Status s = co_await disk.resize(new_size, {});
  if (!s) co_return s;
  co_return co_await disk.flush();
}

}  // namespace vmm::virtio
