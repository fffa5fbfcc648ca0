#include "img/image.h"

#include <sys/stat.h>

#include "img/bytes.h"
#include "qcow2/format.h"

namespace img {

Task<Result<std::string>> probe_format(File& f) {
  uint8_t magic[4] = {};
  CO_ASSIGN_OR_RETURN(uint64_t got, co_await f.read(0, magic, sizeof magic));
  if (got == 4 && load_be32(magic) == qcow2::kMagic) co_return std::string("qcow2");
  co_return std::string("raw");
}

namespace {

class HostFileOpener final : public FileOpener {
 public:
  Result<std::unique_ptr<File>> open(IoLoop& loop, const std::string& path,
                                     FileOpenOptions opts) const override {
    return open_file(loop, path, opts);
  }
  std::string identity(const std::string& path) const override {
    if (is_nbd_name(path)) return "nbd:" + path;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return "path:" + path;
    return strfmt("inode:%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
  }
};

}  // namespace

const FileOpener& host_file_opener() {
  static const HostFileOpener opener;
  return opener;
}

std::string combine_backing_path(const std::string& overlay, const std::string& backing) {
  if (backing.empty() || backing[0] == '/') return backing;
  size_t slash = overlay.rfind('/');
  if (slash == std::string::npos) return backing;
  return overlay.substr(0, slash + 1) + backing;
}

Task<Result<std::unique_ptr<BlockDriver>>> open_image(IoLoop& loop, const std::string& path,
                                                      OpenOptions opts) {
  const FileOpener& opener = opts.opener ? *opts.opener : host_file_opener();
  FileOpenOptions fo;
  fo.read_only = opts.read_only;
  fo.direct = opts.direct;
  // The caller asked for read-write where it did not say read-only; say why it cannot have it.
  CO_ASSIGN_OR_RETURN(auto file, opener.open(loop, path, fo));
  file = apply_cache_mode(std::move(file), opts.no_flush, opts.writethrough);
  co_return co_await open_image_file(loop, std::move(file), opts);
}

}  // namespace img
