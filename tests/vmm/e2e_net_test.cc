// End to end under KVM: virtio-net. In a network namespace of its own (a forked child, so the
// host's network never sees it) the test makes a tap, listens on it with a packet socket, runs
// the vmm binary with `--net tap=NAME` on the freestanding test guest, sees the guest's frame on
// the tap and injects one back, which the guest reports on its serial port. Skipped, with the
// reason, where /dev/kvm, /dev/net/tun or network namespaces are not available.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
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

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "run_shell.h"

namespace {

namespace fs = std::filesystem;
using vmm_test::run_shell;
using vmm_test::slurp;

constexpr uint16_t kEtherType = 0x88b5;  // IEEE 802 local experimental
constexpr char kTap[] = "vmmtap0";

// A persistent tap named kTap, link up, in the current namespace; "" or what failed.
std::string make_tap() {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return std::string("open /dev/net/tun: ") + strerror(errno);
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  std::strncpy(ifr.ifr_name, kTap, IFNAMSIZ - 1);
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
  std::ofstream(std::string("/proc/sys/net/ipv6/conf/") + kTap + "/disable_ipv6") << "1\n";
  return "";
}

// Waits for the guest's frame on the tap, writes "SRC-MAC PAYLOAD" to seen_path and answers
// to that MAC with "vmm-host-reply".
void answer_guest(int ps, int ifindex, const std::string& seen_path) {
  uint8_t b[2048];
  for (;;) {
    pollfd p{ps, POLLIN, 0};
    if (poll(&p, 1, 240000) <= 0) return;
    ssize_t n = recv(ps, b, sizeof b, 0);
    if (n < 14 + 15) continue;
    if (b[12] != kEtherType >> 8 || b[13] != (kEtherType & 0xff)) continue;
    char mac[18];
    snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", b[6], b[7], b[8], b[9], b[10],
             b[11]);
    std::string payload(reinterpret_cast<char*>(b + 14),
                        strnlen(reinterpret_cast<char*>(b + 14), n - 14));
    std::ofstream(seen_path) << mac << " " << payload << "\n";
    uint8_t r[64] = {};
    std::memcpy(r, b + 6, 6);  // to the guest
    std::memcpy(r + 6, "\x02\x00\x00\x00\x00\xaa", 6);
    r[12] = kEtherType >> 8;
    r[13] = kEtherType & 0xff;
    std::memcpy(r + 14, "vmm-host-reply", 14);
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = ifindex;
    to.sll_halen = 6;
    std::memcpy(to.sll_addr, b + 6, 6);
    sendto(ps, r, sizeof r, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    return;
  }
}

// In the forked child: namespace, tap, listener, vmm. Writes dir/status: SKIP <why>, ERR <why>
// or RC <vmm exit code>.
void child(const std::string& dir) {
  std::ofstream status(dir + "/status");
  if (unshare(CLONE_NEWNET) != 0) {
    status << "SKIP cannot make a network namespace: " << strerror(errno) << "\n";
    return;
  }
  std::string e = make_tap();
  if (!e.empty()) {
    status << "SKIP cannot make a tap: " << e << "\n";
    return;
  }
  int ifindex = static_cast<int>(if_nametoindex(kTap));
  int ps = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(kEtherType));
  sockaddr_ll a{};
  a.sll_family = AF_PACKET;
  a.sll_protocol = htons(kEtherType);
  a.sll_ifindex = ifindex;
  if (ps < 0 || bind(ps, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    status << "ERR packet socket on " << kTap << ": " << strerror(errno) << "\n";
    return;
  }
  std::thread listener(answer_guest, ps, ifindex, dir + "/seen");
  auto r = run_shell(std::string("timeout 300 ") + VMM_BINARY + " run --kernel " + VMM_TEST_GUEST +
                         " --memory 64M --cmdline 'nodisk net' --net tap=" + kTap +
                         ",mac=02:00:00:12:34:56",
                     dir);
  shutdown(ps, SHUT_RDWR);
  listener.join();
  status << "RC " << r.rc << "\n";
}

TEST(VmmE2eNet, GuestFrameSeenOnTheTapAndAnInjectedFrameReachesTheGuest) {
  if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/kvm is missing or not read/write";
  if (access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/net/tun is not available";
  const char* t = std::getenv("IMG_TEST_TMPDIR");
  std::string dir = std::string(t && *t ? t : "/tmp") + "/vmm_e2e_net_" + std::to_string(getpid());
  fs::create_directories(dir);
  pid_t pid = fork();
  if (pid == 0) {
    child(dir);
    _exit(0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  std::string status = slurp(dir + "/status");
  if (status.starts_with("SKIP")) GTEST_SKIP() << status.substr(5);
  ASSERT_TRUE(status.starts_with("RC ")) << status;
  std::string out = slurp(dir + "/out.txt"), err = slurp(dir + "/err.txt");
  EXPECT_EQ(status, "RC 0\n") << err;
  EXPECT_NE(err.find("attached to tap vmmtap0, guest MAC 02:00:00:12:34:56"), std::string::npos)
      << err;
  EXPECT_NE(out.find("GUEST: net mac 02:00:00:12:34:56"), std::string::npos) << out;
  EXPECT_EQ(slurp(dir + "/seen"), "02:00:00:12:34:56 vmm-guest-hello\n") << out;
  EXPECT_NE(out.find("GUEST: net got 'vmm-host-reply'"), std::string::npos) << out;
  EXPECT_NE(out.find("GUEST: PASS"), std::string::npos) << out;
  if (!HasFailure()) fs::remove_all(dir);
}

TEST(VmmE2eNet, BadNetOptionsAndAMissingTapAreClearErrors) {
  if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/kvm is missing or not read/write";
  const char* t = std::getenv("IMG_TEST_TMPDIR");
  std::string dir =
      std::string(t && *t ? t : "/tmp") + "/vmm_e2e_netopt_" + std::to_string(getpid());
  fs::create_directories(dir);
  std::string run = std::string(VMM_BINARY) + " run --kernel " + VMM_TEST_GUEST + " --memory 64M ";
  auto r = run_shell(run + "--net user", dir);
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--net must be tap or tap=NAME"), std::string::npos) << r.err;
  r = run_shell(run + "--net tap=vmmnosuch7", dir);
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--net: tap vmmnosuch7 does not exist"), std::string::npos) << r.err;
  fs::remove_all(dir);
}

}  // namespace
