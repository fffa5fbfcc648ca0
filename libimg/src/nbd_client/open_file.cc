// open_file: the one place a file name becomes a File, so an NBD URI works wherever a host path
// does (qemu's bdrv_open picks the protocol driver from the name the same way).
#include "img/file.h"
#include "nbd_client/nbd_file.h"
#include "nbd_client/nbd_uri.h"

namespace img {

bool is_nbd_name(const std::string& path) { return nbd_client::is_nbd_name(path); }

std::string shown_file_name(const std::string& path) {
  if (!is_nbd_name(path)) return path;
  auto t = nbd_client::parse_nbd_name(path);
  return t ? t->display : path;
}

Result<std::unique_ptr<File>> open_file(IoLoop& loop, const std::string& path,
                                        FileOpenOptions opts) {
  if (!is_nbd_name(path)) return open_host_file(loop, path, opts);
  if (opts.create || opts.truncate) {
    return not_supported("'" + path + "': an NBD export cannot be created (use convert -n)");
  }
  return nbd_client::open_nbd_file(loop, path, opts);
}

}  // namespace img
