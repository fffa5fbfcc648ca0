// Opening the qcow2 driver (used by image.cc's open_image).
#pragma once

#include <memory>

#include "img/block_driver.h"
#include "img/file.h"
#include "img/image.h"

namespace img::qcow2 {

Task<Result<std::unique_ptr<BlockDriver>>> open_qcow2(IoLoop& loop, std::unique_ptr<File> file,
                                                      const OpenOptions& opts);

}  // namespace img::qcow2
