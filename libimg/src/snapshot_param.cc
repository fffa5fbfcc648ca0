// parse_snapshot_param (img/image.h): -l's text as qemu-img convert and qemu-nbd take it
// (qemu-img.c and qemu-nbd.c: a QemuOpts string with snapshot.id and snapshot.name, or else
// the bare id-or-name).
#include <string_view>

#include "img/snapshot.h"

namespace img {

Result<SnapshotSelector> parse_snapshot_param(const std::string& text) {
  SnapshotSelector sel;
  if (!text.starts_with("snapshot.")) {  // qemu's test: the SNAPSHOT_OPT_BASE prefix
    sel.id = sel.name = text;
    sel.id_or_name = true;
    return sel;
  }
  std::string_view rest = text;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view kv = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    size_t eq = kv.find('=');
    std::string_view key = kv.substr(0, eq);
    std::string value(eq == std::string_view::npos ? std::string_view{} : kv.substr(eq + 1));
    if (key == "snapshot.id") {
      sel.id = value;
    } else if (key == "snapshot.name") {
      sel.name = value;
    } else {
      return invalid_argument("Invalid parameter '" + std::string(key) + "'");
    }
  }
  return sel;
}

}  // namespace img
