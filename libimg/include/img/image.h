// Opening and creating images: the entry points most callers need.
//
//   auto loop = img::IoLoop::create().value();
//   auto disk = loop->run(img::open_image(*loop, "disk.qcow2", {}));
//   if (!disk) die(disk.error().to_string());
//   loop->run((*disk)->read(0, buf, 4096));
//
// Thread-safety: a driver belongs to the thread of the IoLoop it was opened on.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "img/block_driver.h"
#include "img/file.h"
#include "img/io_loop.h"

namespace img {

struct OpenOptions {
  std::string format;       // "raw", "qcow2", or "" to probe the file's magic
  bool read_only = false;
  bool direct = false;      // O_DIRECT on the host file (qemu's cache=none)
  // qcow2 metadata caches, in bytes; 0 picks the default. The default L2 cache covers a 256 GiB
  // image with 64 KiB clusters (32 MiB of L2 tables at most, like QEMU's l2-cache-size).
  uint64_t l2_cache_size = 0;
  uint64_t refcount_cache_size = 0;
};

// Probes "qcow2" or "raw" from the first bytes of f.
Task<Result<std::string>> probe_format(File& f);

// Opens an image on a host file.
Task<Result<std::unique_ptr<BlockDriver>>> open_image(IoLoop& loop, const std::string& path,
                                                      OpenOptions opts);
// Opens an image on a File the caller made (a MemFile in tests). The driver takes ownership.
Task<Result<std::unique_ptr<BlockDriver>>> open_image_file(IoLoop& loop,
                                                           std::unique_ptr<File> file,
                                                           OpenOptions opts);

// raw: a flat file; the driver owns the file.
std::unique_ptr<BlockDriver> make_raw_driver(std::unique_ptr<File> file);

}  // namespace img
