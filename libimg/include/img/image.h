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

// Opens the files a backing chain names. The default opens host files; tests and fuzzers give an
// in-memory one. identity() names the file behind a path (host: device and inode), so a chain
// that comes back to a file it already holds is found however the names differ.
class FileOpener {
 public:
  virtual ~FileOpener() = default;
  virtual Result<std::unique_ptr<File>> open(IoLoop& loop, const std::string& path,
                                             FileOpenOptions opts) const = 0;
  virtual std::string identity(const std::string& path) const = 0;
};
const FileOpener& host_file_opener();

// What opening an image does with the backing file its header names.
enum class BackingPolicy {
  kOpen,    // open the chain (read-only), so unallocated ranges read from it
  kRefuse,  // refuse an image that has one: for inspecting images from strangers
  kIgnore,  // open the image alone (read-only only): for facts about one file of a chain
};

struct OpenOptions {
  std::string format;  // "raw", "qcow2", or "" to probe the file's magic
  bool read_only = false;
  bool direct = false;  // O_DIRECT on the host file (qemu's cache=none)
  // The rest of qemu's cache modes (parse_cache_mode): no_flush makes flushes of the host file
  // no-ops (cache=unsafe: what qemu-img convert writes its target with); writethrough makes each
  // write durable before it completes (cache=writethrough, directsync).
  bool no_flush = false;
  bool writethrough = false;
  // qcow2 metadata caches, in bytes; 0 picks the default. The default L2 cache covers a 256 GiB
  // image with 64 KiB clusters (32 MiB of L2 tables at most, like QEMU's l2-cache-size).
  uint64_t l2_cache_size = 0;
  uint64_t refcount_cache_size = 0;
  // qemu's force-share=on (qemu-img -U): the image lock takes its permissions but forbids other
  // users nothing, so an image a running VM writes can be read. Read-only opens only.
  bool force_share = false;
  BackingPolicy backing = BackingPolicy::kOpen;
  unsigned max_chain_depth = 64;       // images below the top one, at most
  const FileOpener* opener = nullptr;  // nullptr: host files
};

// qemu's -t / -T cache mode names (bdrv_parse_cache_mode): "none" or "off" (O_DIRECT),
// "directsync" (O_DIRECT, writethrough), "writeback", "writethrough", "unsafe" (no flushes).
struct CacheMode {
  bool direct = false;
  bool no_flush = false;
  bool writethrough = false;
  void apply_to(OpenOptions& o) const {
    o.direct = direct;
    o.no_flush = no_flush;
    o.writethrough = writethrough;
  }
};
Result<CacheMode> parse_cache_mode(const std::string& name);

// Wraps f so that it follows no_flush / writethrough (returns f itself when neither is set).
std::unique_ptr<File> apply_cache_mode(std::unique_ptr<File> f, bool no_flush, bool writethrough);

// qemu's path_combine: a relative backing name is relative to the overlay's folder.
std::string combine_backing_path(const std::string& overlay, const std::string& backing);

// Probes "qcow2" or "raw" from the first bytes of f.
Task<Result<std::string>> probe_format(File& f);

// Takes the image lock (File::lock) that QEMU takes on the file of an image of format fmt
// ("raw" or "qcow2") opened read-only or read-write, with force-share or not. open_image and
// open_image_file take it on every file of the chain; callers that read an image file
// without a driver (info, check) take it themselves. force_share with !read_only is refused.
Status lock_image_file(File& f, const std::string& fmt, bool read_only, bool force_share);

// Opens an image on a host file.
Task<Result<std::unique_ptr<BlockDriver>>> open_image(IoLoop& loop, const std::string& path,
                                                      OpenOptions opts);
// Opens an image on a File the caller made (a MemFile in tests). The driver takes ownership.
// Backing files are found relative to file->name() through opts.opener.
Task<Result<std::unique_ptr<BlockDriver>>> open_image_file(IoLoop& loop, std::unique_ptr<File> file,
                                                           OpenOptions opts);

// raw: a flat file; the driver owns the file.
std::unique_ptr<BlockDriver> make_raw_driver(std::unique_ptr<File> file);

}  // namespace img
