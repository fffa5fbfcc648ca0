// Tap: the host end of virtio-net, a Linux tap device opened through /dev/net/tun with a vnet
// header (IFF_VNET_HDR, TUNSETVNETHDRSZ = 12: struct virtio_net_hdr_v1, §5.1.6), so frames cross
// with their offload metadata and the device passes guest buffers to writev without reshaping.
// The offloads the tap can hand us (TUNSETOFFLOAD: checksum, TSO4/6, ECN) are probed once at
// open; the device offers the matching virtio features and enables, per guest, only what the
// guest negotiated (QEMU's tap_fd_set_offload does the same).
//
// Kinds: kCreate makes a new tap (the kernel names it, tapN) and sets it up; kExisting attaches
// to a tap that exists (made with `ip tuntap add NAME mode tap`); kFd takes any descriptor that
// behaves like one (a SOCK_SEQPACKET socket: one message per frame, vnet header first) so tests
// run without privileges; its offloads are what the spec says.
//
// Thread-safety: open() from any thread; the descriptor is then used by one I/O thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "img/status.h"

namespace vmm::virtio::net {

// TUN_F_* from <linux/if_tun.h>, as TUNSETOFFLOAD takes them.
inline constexpr uint32_t kTunFCsum = 0x01;
inline constexpr uint32_t kTunFTso4 = 0x02;
inline constexpr uint32_t kTunFTso6 = 0x04;
inline constexpr uint32_t kTunFTsoEcn = 0x08;

struct TapSpec {
  enum class Kind { kCreate, kExisting, kFd };
  Kind kind = Kind::kCreate;
  std::string name;          // kExisting: the tap's name
  int fd = -1;               // kFd: duplicated; the caller keeps its own
  uint32_t fd_offloads = 0;  // kFd: the TUN_F_* bits the stand-in accepts
};

class Tap {
 public:
  static img::Result<std::unique_ptr<Tap>> open(const TapSpec& spec);
  ~Tap();
  Tap(const Tap&) = delete;
  Tap& operator=(const Tap&) = delete;

  int fd() const { return fd_; }  // non-blocking
  const std::string& name() const { return name_; }
  uint32_t supported_offloads() const { return supported_; }
  // What the tap may hand us from now on (TUNSETOFFLOAD); a subset of supported_offloads().
  img::Status set_offloads(uint32_t tun_flags);

 private:
  Tap(int fd, std::string name, uint32_t supported, bool is_tap)
      : fd_(fd), name_(std::move(name)), supported_(supported), is_tap_(is_tap) {}
  int fd_;
  std::string name_;
  uint32_t supported_;
  bool is_tap_;
};

}  // namespace vmm::virtio::net
