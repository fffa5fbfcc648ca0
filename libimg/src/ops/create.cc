// create_image: a new raw or qcow2 file.
#include <algorithm>
#include <cstdlib>
#include <memory>

#include "img/file.h"
#include "img/ops.h"

namespace img {
namespace {

// Writes zeros over [0, size) so every block is allocated (preallocation=full).
Task<Status> write_zeros_full(File& f, uint64_t size) {
  constexpr uint64_t kChunk = 1 << 20;
  std::unique_ptr<uint8_t[]> zeros(new uint8_t[kChunk]());
  for (uint64_t off = 0; off < size; off += kChunk) {
    CO_RETURN_IF_ERROR(co_await f.write(off, zeros.get(), std::min(kChunk, size - off)));
  }
  co_return Status{};
}

Task<Status> create_raw(File& f, uint64_t size, Preallocation prealloc) {
  // qemu's file driver works in 512-byte sectors; it rounds the size up the same way.
  size = (size + 511) / 512 * 512;
  switch (prealloc) {
    case Preallocation::kOff:
      break;
    case Preallocation::kMetadata:
      co_return invalid_argument("Unsupported preallocation mode: metadata");
    case Preallocation::kFalloc:
      if (size) CO_RETURN_IF_ERROR(co_await f.allocate(0, size));
      break;
    case Preallocation::kFull:
      CO_RETURN_IF_ERROR(co_await write_zeros_full(f, size));
      break;
  }
  CO_RETURN_IF_ERROR(co_await f.truncate(size));
  co_return co_await f.flush();
}

}  // namespace

Task<Status> create_image(IoLoop& loop, const std::string& path, const std::string& format,
                          uint64_t size, const Qcow2CreateOptions& opts) {
  if (format != "raw" && format != "qcow2") {
    co_return invalid_argument("Unknown file format '" + format + "'");
  }
  if (size > static_cast<uint64_t>(INT64_MAX)) {
    co_return invalid_argument("Image size must be less than 8 EiB!");
  }
  // As raw_co_create (block/file-posix.c): open without O_TRUNC, take the creator's lock (write
  // and resize, sharing all but resize), and only then empty the file, so an image a running VM
  // uses is refused intact rather than truncated under it.
  FileOpenOptions fo{.read_only = false, .create = true};
  Qcow2CreateOptions q = opts;
  q.size = size;
  std::unique_ptr<File> data_file;
  if (format == "qcow2" && !q.data_file.empty()) {
    // As qcow2_co_create_opts: the data file is made first, as a raw file of the virtual size,
    // preallocated as asked (metadata preallocation is the image's business). Its name is taken
    // as it stands, relative to the working directory (qcow2's open does the same).
    CO_ASSIGN_OR_RETURN(data_file, open_host_file(loop, q.data_file, fo));
    CO_RETURN_IF_ERROR(data_file->lock(kPermWrite | kPermResize, kPermAll & ~kPermResize));
    CO_RETURN_IF_ERROR(co_await data_file->truncate(0));
    Preallocation p =
        q.preallocation == Preallocation::kMetadata ? Preallocation::kOff : q.preallocation;
    CO_RETURN_IF_ERROR(co_await create_raw(*data_file, size, p));
  }
  CO_ASSIGN_OR_RETURN(std::unique_ptr<File> f, open_host_file(loop, path, fo));
  CO_RETURN_IF_ERROR(f->lock(kPermWrite | kPermResize, kPermAll & ~kPermResize));
  CO_RETURN_IF_ERROR(co_await f->truncate(0));
  if (format == "raw") co_return co_await create_raw(*f, size, opts.preallocation);
  CO_RETURN_IF_ERROR(co_await create_qcow2(*f, q));
  co_return co_await f->flush();
}

}  // namespace img
