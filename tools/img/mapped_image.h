// An image opened with its backing chain for reading, with the ChainMapper that answers qemu's
// block status through it: what map, compare and measure read a source through.
#pragma once

#include <memory>
#include <string>

#include "img/block_map.h"
#include "img/image.h"

namespace imgcli {

struct MappedImage {
  std::unique_ptr<img::BlockDriver> driver;
  std::unique_ptr<img::ChainMapper> mapper;
};

// Opens path (format fmt, "" probes) read-only with its chain, sharing it with writers when
// force_share (-U). Errors name the file as qemu-img's "Could not open 'path': ..." does.
img::Result<MappedImage> open_mapped(img::IoLoop& loop, const std::string& path,
                                     const std::string& fmt, bool force_share);

}  // namespace imgcli
