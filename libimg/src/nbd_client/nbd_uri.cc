#include "nbd_client/nbd_uri.h"

#include <cctype>
#include <string_view>

namespace img::nbd_client {
namespace {

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// RFC 3986 percent-encoding for a query value or path segment: unreserved characters and '/'
// pass, everything else is %XX.
std::string pct_encode(std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace

bool is_nbd_name(const std::string& path) {
  return starts_with(path, "nbd:") || starts_with(path, "nbd+unix:") ||
         starts_with(path, "nbds:") || starts_with(path, "nbds+unix:");
}

Result<NbdTarget> parse_nbd_name(const std::string& path) {
  if (starts_with(path, "nbd://") || starts_with(path, "nbd+unix://") ||
      starts_with(path, "nbds://") || starts_with(path, "nbds+unix://")) {
    return NbdTarget{path, path};
  }
  // Legacy: nbd:unix:PATH[:exportname=X] or nbd:HOST:PORT[:exportname=X] (qemu's
  // nbd_parse_filename splits on ":exportname=" first, then on the first ':').
  std::string rest = path.substr(4);
  std::string export_name;
  if (size_t e = rest.find(":exportname="); e != std::string::npos) {
    export_name = rest.substr(e + 12);
    rest.resize(e);
  }
  NbdTarget t;
  if (starts_with(rest, "unix:")) {
    std::string sock = rest.substr(5);
    if (sock.empty()) return invalid_argument("'" + path + "': no socket path after nbd:unix:");
    t.uri = "nbd+unix:///" + pct_encode(export_name) + "?socket=" + pct_encode(sock);
    t.display = "nbd+unix:///" + export_name + "?socket=" + sock;
    return t;
  }
  size_t colon = rest.rfind(':');
  if (rest.empty() || colon == std::string::npos || colon + 1 == rest.size()) {
    return invalid_argument("'" + path + "': expected nbd:HOST:PORT or nbd:unix:PATH");
  }
  std::string host = rest.substr(0, colon), port = rest.substr(colon + 1);
  for (char c : port) {
    if (!std::isdigit(static_cast<unsigned char>(c))) {
      return invalid_argument("'" + path + "': port '" + port + "' is not a number");
    }
  }
  if (host.find(':') != std::string::npos) host = "[" + host + "]";  // IPv6
  t.uri = "nbd://" + host + ":" + port + "/" + pct_encode(export_name);
  t.display = "nbd://" + host + ":" + port + "/" + export_name;
  return t;
}

}  // namespace img::nbd_client
