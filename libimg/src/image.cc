#include "img/image.h"

#include "img/bytes.h"
#include "qcow2/format.h"
#include "qcow2/open.h"

namespace img {

Task<Result<std::string>> probe_format(File& f) {
  uint8_t magic[4] = {};
  CO_ASSIGN_OR_RETURN(uint64_t got, co_await f.read(0, magic, sizeof magic));
  if (got == 4 && load_be32(magic) == qcow2::kMagic) co_return std::string("qcow2");
  co_return std::string("raw");
}

Task<Result<std::unique_ptr<BlockDriver>>> open_image_file(IoLoop& loop,
                                                           std::unique_ptr<File> file,
                                                           OpenOptions opts) {
  std::string fmt = opts.format;
  if (fmt.empty()) {
    CO_ASSIGN_OR_RETURN(fmt, co_await probe_format(*file));
  }
  if (fmt == "raw") co_return make_raw_driver(std::move(file));
  if (fmt == "qcow2") co_return co_await qcow2::open_qcow2(loop, std::move(file), opts);
  co_return invalid_argument("unknown image format '" + fmt + "' (raw and qcow2 are supported)");
}

Task<Result<std::unique_ptr<BlockDriver>>> open_image(IoLoop& loop, const std::string& path,
                                                      OpenOptions opts) {
  FileOpenOptions fo;
  fo.read_only = opts.read_only;
  fo.direct = opts.direct;
  auto file = open_host_file(loop, path, fo);
  if (!file) {
    // Retry read-only where writing is not permitted, as qemu-img does for info-like callers?
    // No: the caller asked for read-write; say why it cannot have it.
    co_return Unexpected(std::move(file).error());
  }
  co_return co_await open_image_file(loop, std::move(*file), opts);
}

}  // namespace img
