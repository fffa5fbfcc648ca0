// Opening a backing chain for a command that writes into one of its backing images (commit).
// The base's host file is opened once, read-write: the base's own driver writes through one view
// of it and the top image's chain reads it through a read-only view of the same file, so one
// open file (and so one image lock, as QEMU's reopen of the base keeps one) serves both.
#pragma once

#include <memory>
#include <string>

#include "img/block_driver.h"
#include "img/image.h"
#include "img/io_loop.h"
#include "img/status.h"
#include "img/task.h"

namespace imgcli {

struct ChainWithBase {
  std::unique_ptr<img::BlockDriver> top;   // read-write, with its backing chain
  std::unique_ptr<img::BlockDriver> base;  // the base image of that chain, read-write
};

// top_opts apply to the top image (format, cache mode); the base opens with base_fmt and the
// same cache mode. Errors name the file that failed.
img::Task<img::Result<ChainWithBase>> open_chain_with_writable_base(
    img::IoLoop& loop, const std::string& top_path, const img::OpenOptions& top_opts,
    const std::string& base_path, const std::string& base_fmt);

}  // namespace imgcli
