#include "hostnet/netlink.h"

#include <arpa/inet.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace vmm::hostnet {
namespace {

// One request: nlmsghdr, the family header, then attributes (nested ones through begin/end).
class Request {
 public:
  Request(uint16_t type, uint16_t flags) {
    buf_.resize(NLMSG_HDRLEN);
    hdr()->nlmsg_type = type;
    hdr()->nlmsg_flags = static_cast<uint16_t>(flags | NLM_F_REQUEST | NLM_F_ACK);
  }
  template <class T>
  T* header() {  // the family header (ifinfomsg, ifaddrmsg); call once, first
    buf_.resize(NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(T)), 0);
    return reinterpret_cast<T*>(buf_.data() + NLMSG_HDRLEN);
  }
  void attr(uint16_t type, const void* data, size_t len) {
    size_t at = buf_.size();
    buf_.resize(at + RTA_ALIGN(RTA_LENGTH(len)), 0);
    auto* a = reinterpret_cast<rtattr*>(buf_.data() + at);
    a->rta_type = type;
    a->rta_len = static_cast<uint16_t>(RTA_LENGTH(len));
    if (len > 0) std::memcpy(RTA_DATA(a), data, len);  // a nest's header has no data
  }
  void attr_str(uint16_t type, const std::string& s) { attr(type, s.c_str(), s.size() + 1); }
  void attr_u32(uint16_t type, uint32_t v) { attr(type, &v, sizeof v); }
  size_t begin(uint16_t type) {
    size_t at = buf_.size();
    attr(type, nullptr, 0);
    return at;
  }
  void end(size_t at) {
    reinterpret_cast<rtattr*>(buf_.data() + at)->rta_len = static_cast<uint16_t>(buf_.size() - at);
  }
  std::vector<char>& finish() {
    hdr()->nlmsg_len = static_cast<uint32_t>(buf_.size());
    return buf_;
  }

 private:
  nlmsghdr* hdr() { return reinterpret_cast<nlmsghdr*>(buf_.data()); }
  std::vector<char> buf_;
};

struct Socket {
  int fd = -1;
  ~Socket() {
    if (fd >= 0) ::close(fd);
  }
};

// Sends the request and reads until its ACK (or error). A reply message other than the ACK
// (RTM_GETLINK's answer) is handed to on_reply. Returns 0 or the kernel's errno.
template <class F>
int transact(Request& rq, F&& on_reply) {
  Socket s;
  s.fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (s.fd < 0) return errno;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  std::vector<char>& m = rq.finish();
  reinterpret_cast<nlmsghdr*>(m.data())->nlmsg_seq = 1;
  if (::sendto(s.fd, m.data(), m.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) <
      0) {
    return errno;
  }
  std::vector<char> buf(32768);
  for (;;) {
    ssize_t n = ::recv(s.fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, len);
         h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return EPROTO;
        return -static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;  // 0 is the ACK
      }
      if (h->nlmsg_type == NLMSG_DONE) return 0;
      on_reply(h);
    }
  }
}

int transact(Request& rq) {
  return transact(rq, [](const nlmsghdr*) {});
}

img::Unexpected netlink_error(int e, const std::string& what) {
  if (e == EPERM)
    return img::make_error(img::ErrorCode::kPermission,
                           what + ": " + std::strerror(e) + " (needs CAP_NET_ADMIN)", e);
  return img::io_error(e, what);
}

img::Result<int> index_of(const std::string& name, const std::string& what) {
  ASSIGN_OR_RETURN(auto l, find_link(name));
  if (!l) return img::make_error(img::ErrorCode::kNotFound, what + " " + name + " does not exist");
  return l->index;
}

}  // namespace

img::Status check_link_name(const std::string& name, const std::string& what) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    return img::invalid_argument(what + " name '" + name + "' must be 1 to 15 characters");
  }
  if (name == "." || name == "..")
    return img::invalid_argument(what + " name '" + name + "' is reserved");
  for (char c : name) {
    if (c == '/' || c == ':' || c <= ' ' || c == 0x7f) {
      return img::invalid_argument(what + " name '" + name +
                                   "' may not hold '/', ':', spaces or control characters");
    }
  }
  return {};
}

img::Result<std::optional<LinkInfo>> find_link(const std::string& name) {
  RETURN_IF_ERROR(check_link_name(name, "link"));
  Request rq(RTM_GETLINK, 0);
  rq.header<ifinfomsg>()->ifi_family = AF_UNSPEC;
  rq.attr_str(IFLA_IFNAME, name);
  uint32_t ext = RTEXT_FILTER_SKIP_STATS;
  rq.attr(IFLA_EXT_MASK, &ext, sizeof ext);
  std::optional<LinkInfo> found;
  int e = transact(rq, [&](const nlmsghdr* h) {
    if (h->nlmsg_type != RTM_NEWLINK) return;
    const auto* ifi = static_cast<const ifinfomsg*>(NLMSG_DATA(h));
    LinkInfo li;
    li.index = ifi->ifi_index;
    li.up = (ifi->ifi_flags & IFF_UP) != 0;
    int len = static_cast<int>(IFLA_PAYLOAD(h));
    for (auto* a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
      if (a->rta_type == IFLA_MASTER && RTA_PAYLOAD(a) >= 4) {
        std::memcpy(&li.master, RTA_DATA(a), 4);
      } else if (a->rta_type == IFLA_LINKINFO) {
        int ilen = static_cast<int>(RTA_PAYLOAD(a));
        for (auto* b = static_cast<rtattr*>(RTA_DATA(a)); RTA_OK(b, ilen); b = RTA_NEXT(b, ilen)) {
          if (b->rta_type == IFLA_INFO_KIND) {
            li.kind.assign(static_cast<const char*>(RTA_DATA(b)),
                           strnlen(static_cast<const char*>(RTA_DATA(b)), RTA_PAYLOAD(b)));
          }
        }
      }
    }
    found = li;
  });
  if (e == ENODEV) return std::optional<LinkInfo>();
  if (e != 0) return netlink_error(e, "link " + name + ": cannot look it up");
  return found;
}

std::string link_name(int index) {
  char b[IFNAMSIZ] = {};
  return index > 0 && ::if_indextoname(static_cast<unsigned>(index), b) ? b : "";
}

img::Status create_bridge(const std::string& name) {
  RETURN_IF_ERROR(check_link_name(name, "bridge"));
  Request rq(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  rq.header<ifinfomsg>()->ifi_family = AF_UNSPEC;
  rq.attr_str(IFLA_IFNAME, name);
  size_t li = rq.begin(IFLA_LINKINFO);
  rq.attr(IFLA_INFO_KIND, "bridge", 6);
  rq.end(li);
  if (int e = transact(rq)) {
    if (e == EEXIST)
      return img::invalid_argument("bridge " + name + ": a link of that name already exists");
    return netlink_error(e, "bridge " + name + ": cannot create it" +
                                (e == EOPNOTSUPP ? " (no bridge support in this kernel?)" : ""));
  }
  return {};
}

img::Status delete_link(const std::string& name) {
  ASSIGN_OR_RETURN(int index, index_of(name, "link"));
  Request rq(RTM_DELLINK, 0);
  auto* ifi = rq.header<ifinfomsg>();
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = index;
  if (int e = transact(rq)) return netlink_error(e, "link " + name + ": cannot delete it");
  return {};
}

img::Status set_link_up(const std::string& name, bool up) {
  ASSIGN_OR_RETURN(int index, index_of(name, "link"));
  Request rq(RTM_NEWLINK, 0);
  auto* ifi = rq.header<ifinfomsg>();
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = index;
  ifi->ifi_flags = up ? IFF_UP : 0;
  ifi->ifi_change = IFF_UP;
  if (int e = transact(rq)) {
    return netlink_error(e, "link " + name + ": cannot set it " + (up ? "up" : "down"));
  }
  return {};
}

img::Status set_master(const std::string& link, const std::string& bridge) {
  ASSIGN_OR_RETURN(auto br, find_link(bridge));
  if (!br)
    return img::make_error(img::ErrorCode::kNotFound, "bridge " + bridge + " does not exist");
  if (br->kind != "bridge") return img::invalid_argument(bridge + " is not a bridge");
  ASSIGN_OR_RETURN(int index, index_of(link, "link"));
  Request rq(RTM_NEWLINK, 0);
  auto* ifi = rq.header<ifinfomsg>();
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = index;
  rq.attr_u32(IFLA_MASTER, static_cast<uint32_t>(br->index));
  if (int e = transact(rq)) {
    return netlink_error(e, link + ": cannot join bridge " + bridge);
  }
  return {};
}

img::Status add_ipv4_address(const std::string& link, uint32_t addr, int prefix) {
  ASSIGN_OR_RETURN(int index, index_of(link, "link"));
  Request rq(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
  auto* ifa = rq.header<ifaddrmsg>();
  ifa->ifa_family = AF_INET;
  ifa->ifa_prefixlen = static_cast<unsigned char>(prefix);
  ifa->ifa_index = static_cast<unsigned>(index);
  uint32_t be = htonl(addr);
  rq.attr(IFA_LOCAL, &be, 4);
  rq.attr(IFA_ADDRESS, &be, 4);
  if (prefix < 31) {
    uint32_t bcast = htonl(addr | (prefix == 0 ? 0xffffffffu : (0xffffffffu >> prefix)));
    rq.attr(IFA_BROADCAST, &bcast, 4);
  }
  Ipv4Cidr c{addr, prefix};
  if (int e = transact(rq)) {
    return netlink_error(e, link + ": cannot add address " + format_ipv4_cidr(c));
  }
  return {};
}

img::Result<Ipv4Cidr> parse_ipv4_cidr(const std::string& text) {
  auto bad = [&] {
    return img::invalid_argument("subnet '" + text +
                                 "' must be an IPv4 address with a prefix length, e.g. "
                                 "192.168.100.1/24");
  };
  size_t slash = text.find('/');
  if (slash == std::string::npos || slash + 1 == text.size() || text.size() - slash > 3) {
    return bad();
  }
  std::string p = text.substr(slash + 1);
  if (p.find_first_not_of("0123456789") != std::string::npos) return bad();
  int prefix = std::stoi(p);
  in_addr a{};
  if (::inet_pton(AF_INET, text.substr(0, slash).c_str(), &a) != 1) return bad();
  if (prefix < 1 || prefix > 30) {
    return img::invalid_argument("subnet '" + text + "': the prefix length must be 1 to 30");
  }
  return Ipv4Cidr{ntohl(a.s_addr), prefix};
}

std::string format_ipv4_cidr(const Ipv4Cidr& c) {
  in_addr a{htonl(c.addr)};
  char b[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &a, b, sizeof b);
  return std::string(b) + "/" + std::to_string(c.prefix);
}

}  // namespace vmm::hostnet
