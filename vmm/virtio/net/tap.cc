#include "virtio/net/tap.h"

// <net/if.h> first: <linux/if_tun.h> then skips <linux/if.h>, whose definitions clash with it.
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "virtio/net/net_spec.h"

namespace vmm::virtio::net {
namespace {

img::Status set_link_up(const std::string& name) {
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return img::io_error(errno, "socket for SIOCSIFFLAGS");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  int r = ::ioctl(s, SIOCGIFFLAGS, &ifr);
  if (r == 0 && !(ifr.ifr_flags & IFF_UP)) {
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    r = ::ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  int e = errno;
  ::close(s);
  if (r < 0) return img::io_error(e, "tap " + name + ": cannot set the link up");
  return {};
}

// The largest offload set the tap accepts, trying the richest first; leaves offloads off.
uint32_t probe_offloads(int fd) {
  for (uint32_t f : {kTunFCsum | kTunFTso4 | kTunFTso6 | kTunFTsoEcn,
                     kTunFCsum | kTunFTso4 | kTunFTso6, kTunFCsum}) {
    if (::ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(f)) == 0) {
      (void)::ioctl(fd, TUNSETOFFLOAD, 0ul);
      return f;
    }
  }
  return 0;
}

}  // namespace

img::Result<std::unique_ptr<Tap>> Tap::open(const TapSpec& spec) {
  if (spec.kind == TapSpec::Kind::kFd) {
    int fd = ::fcntl(spec.fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return img::io_error(errno, "tap stand-in: dup");
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    return std::unique_ptr<Tap>(new Tap(fd, "fd", spec.fd_offloads, false));
  }
  if (spec.kind == TapSpec::Kind::kExisting) {
    if (spec.name.empty() || spec.name.size() >= IFNAMSIZ) {
      return img::invalid_argument("tap name '" + spec.name + "' must be 1 to 15 characters");
    }
    // TUNSETIFF would quietly create a missing tap (gone again when we exit): refuse instead.
    if (::if_nametoindex(spec.name.c_str()) == 0) {
      return img::invalid_argument("tap " + spec.name +
                                   " does not exist (create it: ip tuntap add " + spec.name +
                                   " mode tap), or use --net tap to make one");
    }
  }
  int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return img::io_error(errno, "cannot open /dev/net/tun");
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (spec.kind == TapSpec::Kind::kExisting) {
    std::strncpy(ifr.ifr_name, spec.name.c_str(), IFNAMSIZ - 1);
  }
  if (::ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    ::close(fd);
    std::string what = spec.kind == TapSpec::Kind::kExisting
                           ? "cannot attach to tap " + spec.name +
                                 (e == EBUSY    ? " (another process has it open)"
                                  : e == EINVAL ? " (not a tap device?)"
                                                : "")
                           : std::string("cannot create a tap");
    return img::io_error(e, what);
  }
  std::string name(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
  int hdr_size = static_cast<int>(hdr::kSize);
  if (::ioctl(fd, TUNSETVNETHDRSZ, &hdr_size) < 0) {
    int e = errno;
    ::close(fd);
    return img::io_error(e, "tap " + name + ": TUNSETVNETHDRSZ");
  }
  uint32_t supported = probe_offloads(fd);
  auto tap = std::unique_ptr<Tap>(new Tap(fd, name, supported, true));
  if (spec.kind == TapSpec::Kind::kCreate) RETURN_IF_ERROR(set_link_up(name));
  return tap;
}

Tap::~Tap() {
  if (fd_ >= 0) ::close(fd_);
}

img::Status Tap::set_offloads(uint32_t tun_flags) {
  if (tun_flags & ~supported_) {
    return img::invalid_argument(
        img::strfmt("tap %s: offloads 0x%x not supported", name_.c_str(), tun_flags & ~supported_));
  }
  if (!is_tap_) return {};
  if (::ioctl(fd_, TUNSETOFFLOAD, static_cast<unsigned long>(tun_flags)) < 0) {
    return img::io_error(errno, "tap " + name_ + ": TUNSETOFFLOAD");
  }
  return {};
}

}  // namespace vmm::virtio::net
