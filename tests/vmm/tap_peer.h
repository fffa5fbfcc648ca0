// The host end of `vmm --net tap=NAME` for the end-to-end tests: in a network namespace of its
// own (a forked child, so the host's network never sees it) a persistent tap, a packet socket
// on it that waits for the guest's frame and answers it. Used by the freestanding-guest test
// (e2e_net_test.cc) and the Linux guest test (linux_guest/).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include "run_shell.h"

namespace vmm_test {

constexpr uint16_t kTestEtherType = 0x88b5;  // IEEE 802 local experimental
constexpr char kTestTap[] = "vmmtap0";
constexpr char kHostReply[] = "vmm-host-reply";

// A persistent tap named `name`, link up, in the current namespace; "" or what failed.
inline std::string make_tap(const char* name) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return std::string("open /dev/net/tun: ") + strerror(errno);
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  std::strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETPERSIST, 1) < 0) {
    close(fd);
    return std::string("TUNSETIFF/TUNSETPERSIST: ") + strerror(errno);
  }
  close(fd);  // the VMM attaches next
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ioctl(s, SIOCGIFFLAGS, &ifr);
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  int r = ioctl(s, SIOCSIFFLAGS, &ifr);
  close(s);
  if (r < 0) return std::string("SIOCSIFFLAGS: ") + strerror(errno);
  // No IPv6 chatter on the tap (router solicitations): the guest would only skip it anyway.
  std::ofstream(std::string("/proc/sys/net/ipv6/conf/") + name + "/disable_ipv6") << "1\n";
  return "";
}

// Waits up to timeout_ms for a kTestEtherType frame on the tap, writes "SRC-MAC PAYLOAD" to
// seen_path and answers to that MAC with kHostReply.
inline void answer_guest(int ps, int ifindex, const std::string& seen_path, int timeout_ms) {
  uint8_t b[2048];
  for (;;) {
    pollfd p{ps, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return;
    ssize_t n = recv(ps, b, sizeof b, 0);
    if (n < 14 + 15) continue;
    if (b[12] != kTestEtherType >> 8 || b[13] != (kTestEtherType & 0xff)) continue;
    char mac[18];
    snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", b[6], b[7], b[8], b[9], b[10],
             b[11]);
    std::string payload(reinterpret_cast<char*>(b + 14),
                        strnlen(reinterpret_cast<char*>(b + 14), n - 14));
    std::ofstream(seen_path) << mac << " " << payload << "\n";
    uint8_t r[64] = {};
    std::memcpy(r, b + 6, 6);  // to the guest
    std::memcpy(r + 6, "\x02\x00\x00\x00\x00\xaa", 6);
    r[12] = kTestEtherType >> 8;
    r[13] = kTestEtherType & 0xff;
    std::memcpy(r + 14, kHostReply, sizeof kHostReply - 1);
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = ifindex;
    to.sll_halen = 6;
    std::memcpy(to.sll_addr, b + 6, 6);
    sendto(ps, r, sizeof r, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    return;
  }
}

// Forks a child that makes a network namespace, kTestTap in it and a packet socket answering
// the guest's frame (seen in dir/seen), then runs `cmd` there (output in dir/out.txt and
// dir/err.txt). Returns "SKIP <why>", "ERR <why>" or "RC <exit code of cmd>\n".
inline std::string run_with_tap_peer(const std::string& dir, const std::string& cmd,
                                     int timeout_ms) {
  pid_t pid = fork();
  if (pid == 0) {
    std::ofstream status(dir + "/status");
    if (unshare(CLONE_NEWNET) != 0) {
      status << "SKIP cannot make a network namespace: " << strerror(errno) << "\n";
      _exit(0);
    }
    std::string e = make_tap(kTestTap);
    if (!e.empty()) {
      status << "SKIP cannot make a tap: " << e << "\n";
      _exit(0);
    }
    int ifindex = static_cast<int>(if_nametoindex(kTestTap));
    int ps = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(kTestEtherType));
    sockaddr_ll a{};
    a.sll_family = AF_PACKET;
    a.sll_protocol = htons(kTestEtherType);
    a.sll_ifindex = ifindex;
    if (ps < 0 || bind(ps, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      status << "ERR packet socket on " << kTestTap << ": " << strerror(errno) << "\n";
      _exit(0);
    }
    std::thread listener(answer_guest, ps, ifindex, dir + "/seen", timeout_ms);
    RunResult r = run_shell(cmd, dir);
    shutdown(ps, SHUT_RDWR);
    listener.join();
    status << "RC " << r.rc << "\n";
    status.close();
    _exit(0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return slurp(dir + "/status");
}

}  // namespace vmm_test
