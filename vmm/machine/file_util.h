// Reading the kernel and initrd files with errors a user can act on.
//
// Thread-safety: pure function.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "img/status.h"

namespace vmm {

// Reads all of `path`; `what` names it in errors ("kernel", "initrd"); files larger than
// max_size are refused before reading ("initrd too big for 512 MiB of memory").
img::Result<std::vector<uint8_t>> read_whole_file(const std::string& path, const char* what,
                                                  uint64_t max_size);

}  // namespace vmm
