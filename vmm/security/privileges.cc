#include "security/privileges.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <optional>
#include <vector>

namespace vmm::security {
namespace {

// A decimal id, or nothing.
std::optional<unsigned> as_number(const std::string& s) {
  unsigned v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

}  // namespace

img::Result<Credentials> resolve_credentials(const std::string& user, const std::string& group) {
  Credentials c;
  std::vector<char> buf(16384);
  std::optional<gid_t> primary;
  if (auto n = as_number(user)) {
    c.uid = *n;
    passwd pw, *res = nullptr;
    if (getpwuid_r(c.uid, &pw, buf.data(), buf.size(), &res) == 0 && res) primary = pw.pw_gid;
  } else {
    passwd pw, *res = nullptr;
    int e = getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &res);
    if (e != 0 || !res) return img::invalid_argument("--user: no such user '" + user + "'");
    c.uid = pw.pw_uid;
    primary = pw.pw_gid;
  }
  if (group.empty()) {
    if (!primary) {
      return img::invalid_argument("--user " + user + " has no passwd entry: give --group too");
    }
    c.gid = *primary;
  } else if (auto n = as_number(group)) {
    c.gid = *n;
  } else {
    struct group gr, *res = nullptr;
    int e = getgrnam_r(group.c_str(), &gr, buf.data(), buf.size(), &res);
    if (e != 0 || !res) return img::invalid_argument("--group: no such group '" + group + "'");
    c.gid = gr.gr_gid;
  }
  if (c.uid == 0) return img::invalid_argument("--user must not be root");
  return c;
}

img::Status drop_privileges(const Credentials& c) {
  gid_t groups[1] = {c.gid};
  if (::setgroups(1, groups) < 0) return img::io_error(errno, "--user: setgroups");
  if (::setgid(c.gid) < 0) return img::io_error(errno, img::strfmt("--group: setgid(%u)", c.gid));
  if (::setuid(c.uid) < 0) return img::io_error(errno, img::strfmt("--user: setuid(%u)", c.uid));
  if (::setuid(0) == 0)
    return img::make_error(img::ErrorCode::kIo, "--user: root could be regained after setuid");
  return {};
}

}  // namespace vmm::security
