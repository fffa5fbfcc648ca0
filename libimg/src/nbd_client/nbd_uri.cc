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

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string pct_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    int hi = 0, lo = 0;
    if (s[i] == '%' && i + 2 < s.size() && (hi = hex_digit(s[i + 1])) >= 0 &&
        (lo = hex_digit(s[i + 2])) >= 0) {
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The parts of a URI that qemu names: the export, and the socket or host and port (an IPv6
// host without its brackets, the default port filled in). ok is false for shapes this does not
// take apart (TLS schemes, a bracket left open); those print as given.
struct UriParts {
  bool ok = false, unix_socket = false;
  std::string exp, socket, host, port = "10809";
};

UriParts split_uri(const std::string& uri) {
  UriParts p;
  std::string_view u = uri;
  size_t scheme_end = u.find("://");
  if (scheme_end == std::string_view::npos) return p;
  std::string_view scheme = u.substr(0, scheme_end), rest = u.substr(scheme_end + 3);
  std::string_view query;
  if (size_t q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  p.exp = slash == std::string_view::npos ? "" : pct_decode(rest.substr(slash + 1));
  if (scheme == "nbd+unix") {
    for (size_t at = 0; at <= query.size();) {
      size_t amp = query.find('&', at);
      std::string_view kv = query.substr(at, amp == std::string_view::npos ? amp : amp - at);
      if (starts_with(kv, "socket=")) p.socket = pct_decode(kv.substr(7));
      if (amp == std::string_view::npos) break;
      at = amp + 1;
    }
    p.unix_socket = true;
    p.ok = !p.socket.empty();
    return p;
  }
  if (scheme != "nbd" || authority.empty()) return p;
  p.host = authority;
  if (authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return p;
    p.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return p;
      p.port = authority.substr(close + 2);
    }
  } else if (size_t c = authority.find(':'); c != std::string_view::npos) {
    p.host = authority.substr(0, c);
    p.port = authority.substr(c + 1);
  }
  p.ok = true;
  return p;
}

// The name qemu prints: block/nbd.c nbd_refresh_filename rebuilds it from what it parsed
// (nbd+unix:///EXPORT?socket=PATH, nbd+unix://?socket=PATH without an export,
// nbd://HOST:PORT[/EXPORT] with the default port filled in; an IPv6 host loses its brackets
// there, "nbd://::1:10809/e", and so it does here).
std::string display_name(const std::string& uri) {
  UriParts p = split_uri(uri);
  if (!p.ok) return uri;
  if (p.unix_socket) {
    return p.exp.empty() ? "nbd+unix://?socket=" + p.socket
                         : "nbd+unix:///" + p.exp + "?socket=" + p.socket;
  }
  return "nbd://" + p.host + ":" + p.port + (p.exp.empty() ? "" : "/" + p.exp);
}

// What qemu's "Failed to connect to '...'" names: the socket's path, or HOST:PORT.
std::string connect_address(const std::string& uri) {
  UriParts p = split_uri(uri);
  if (!p.ok) return uri;
  return p.unix_socket ? p.socket : p.host + ":" + p.port;
}

}  // namespace

bool is_nbd_name(const std::string& path) {
  return starts_with(path, "nbd:") || starts_with(path, "nbd+unix:") ||
         starts_with(path, "nbds:") || starts_with(path, "nbds+unix:");
}

Result<NbdTarget> parse_nbd_name(const std::string& path) {
  if (starts_with(path, "nbd://") || starts_with(path, "nbd+unix://") ||
      starts_with(path, "nbds://") || starts_with(path, "nbds+unix://")) {
    return NbdTarget{path, display_name(path), connect_address(path)};
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
    t.display = display_name(t.uri);
    t.address = connect_address(t.uri);
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
  t.display = display_name(t.uri);
  t.address = connect_address(t.uri);
  return t;
}

}  // namespace img::nbd_client
