// Alignment rules for O_DIRECT on one open file.
#pragma once

#include <cstdint>

namespace img {

struct DioAlign {
  uint32_t mem = 4096;     // buffer addresses (and iovec lengths) must be multiples of this
  uint32_t offset = 4096;  // file offsets and lengths must be multiples of this
};

// Falls back to 4096/4096 where the kernel or file system does not say.
DioAlign query_dio_align(int fd);

}  // namespace img
