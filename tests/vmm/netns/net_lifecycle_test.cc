// End to end: `vmm net-define/net-start/net-list/net-info/net-autostart/net-stop/net-undefine`
// and a defined VM on such a network, in this binary's own network namespace. The freestanding
// test guest ('nodisk net') broadcasts a frame from its virtio-net device; a packet socket on the
// network's bridge sees it come through the VM's tap, which vmm made a port of the bridge, and
// answers it; the guest prints the answer. Every bad use gives one line and exit code 1.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "../run_shell.h"
#include "../tap_peer.h"
#include "hostnet/netlink.h"
#include "netns.h"

namespace {

namespace fs = std::filesystem;
namespace hn = vmm::hostnet;
using vmm_test::run_shell;
using vmm_test::slurp;

class NetLifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_NETNS();
    char t[] = "/tmp/vmmnet.XXXXXX";
    ASSERT_NE(mkdtemp(t), nullptr);
    dir_ = t;
    state_ = dir_ + "/s";
  }
  void TearDown() override {
    if (dir_.empty()) return;
    run_shell(vmm("destroy", "netvm"), dir_);
    fs::remove_all(dir_);
    (void)hn::delete_link("vmmlabbr0");
  }
  std::string vmm(const std::string& cmd, const std::string& rest = "") const {
    return std::string(VMM_BINARY) + " " + cmd + " --state-dir " + state_ + " " + rest;
  }
  vmm_test::RunResult ok(const std::string& cmd, const std::string& rest = "") {
    auto r = run_shell(vmm(cmd, rest), dir_);
    EXPECT_EQ(r.rc, 0) << cmd << " " << rest << ": " << r.err;
    return r;
  }
  // The one line a failing command prints, and its exit code 1.
  void fails(const std::string& cmd, const std::string& rest, const std::string& line) {
    auto r = run_shell(vmm(cmd, rest), dir_);
    EXPECT_EQ(r.rc, 1) << cmd << " " << rest;
    EXPECT_EQ(r.err, "vmm: " + line + "\n") << cmd << " " << rest;
  }
  bool wait_shut_off(const std::string& name, double seconds) {
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
      std::string l = run_shell(vmm("list", "--all"), dir_).out;
      if (l.find(" " + name + " ") != std::string::npos &&
          l.find("shut off") != std::string::npos) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  std::string dir_, state_;
};

TEST_F(NetLifecycleTest, DefineStartListInfoStopUndefine) {
  EXPECT_EQ(ok("net-define", "lab --bridge vmmlabbr0 --subnet 10.77.0.0/24").out,
            "Network lab defined\n\n");
  EXPECT_EQ(ok("net-list").out,
            " Name   State   Autostart   Persistent\n"
            "----------------------------------------\n\n");
  EXPECT_EQ(ok("net-list", "--all").out,
            " Name   State      Autostart   Persistent\n"
            "-------------------------------------------\n"
            " lab    inactive   no          yes\n\n");
  EXPECT_FALSE(*hn::find_link("vmmlabbr0"));

  EXPECT_EQ(ok("net-start", "lab").out, "Network lab started\n\n");
  auto br = hn::find_link("vmmlabbr0");
  ASSERT_TRUE(br && *br);
  EXPECT_EQ((*br)->kind, "bridge");
  EXPECT_TRUE((*br)->up);
  auto addr = run_shell("ip -4 -o addr show dev vmmlabbr0", dir_);
  EXPECT_NE(addr.out.find("inet 10.77.0.1/24"), std::string::npos) << addr.out << addr.err;
  EXPECT_EQ(ok("net-list").out,
            " Name   State    Autostart   Persistent\n"
            "-----------------------------------------\n"
            " lab    active   no          yes\n\n");
  std::string info = ok("net-info", "lab").out;
  EXPECT_NE(info.find("Name:           lab\n"), std::string::npos) << info;
  EXPECT_NE(info.find("Active:         yes\n"), std::string::npos) << info;
  EXPECT_NE(info.find("Autostart:      no\n"), std::string::npos) << info;
  EXPECT_NE(info.find("Bridge:         vmmlabbr0\n"), std::string::npos) << info;
  EXPECT_NE(info.find("Address:        10.77.0.1/24\n"), std::string::npos) << info;

  fails("net-start", "lab", "network 'lab' is already active");
  fails("net-undefine", "lab", "network 'lab' is active; stop it first (vmm net-stop lab)");
  fails("net-define", "other --bridge vmmlabbr0",
        "bridge vmmlabbr0 already belongs to network 'lab'");
  fails("net-define", "lab --bridge vmmlabbr9",
        "network 'lab' is active; stop it (vmm net-stop lab) before changing its bridge or "
        "subnet");
  EXPECT_EQ(ok("net-destroy", "lab").out, "Network lab destroyed\n\n");
  EXPECT_FALSE(*hn::find_link("vmmlabbr0"));
  fails("net-stop", "lab", "network 'lab' is not active");
  EXPECT_EQ(ok("net-autostart", "lab").out, "Network lab marked as autostarted\n\n");
  EXPECT_NE(ok("net-info", "lab").out.find("Autostart:      yes\n"), std::string::npos);
  EXPECT_EQ(ok("net-autostart", "lab --disable").out, "Network lab unmarked as autostarted\n\n");
  EXPECT_EQ(ok("net-undefine", "lab").out, "Network lab has been undefined\n\n");
  fails("net-info", "lab", "no network named 'lab' in " + state_);
  fails("net-start", "lab", "no network named 'lab' in " + state_);
}

TEST_F(NetLifecycleTest, BadNamesAndABridgeThatIsNotOurs) {
  fails("net-define", "../x --bridge vmmlabbr0",
        "network name '../x' may not start with '.' or '-'");
  fails("net-define", "lab --bridge way-too-long-name0",
        "bridge name 'way-too-long-name0' must be 1 to 15 characters");
  fails("net-define", "lab --bridge vmmlabbr0 --subnet 10.0.0.1",
        "subnet '10.0.0.1' must be an IPv4 address with a prefix length, e.g. 192.168.100.1/24");
  // A bridge made by someone else is never taken over, nor deleted by net-stop.
  ASSERT_TRUE(hn::create_bridge("vmmlabbr0"));
  ok("net-define", "lab --bridge vmmlabbr0");
  fails("net-start", "lab",
        "network 'lab': a link named vmmlabbr0 already exists (not made by vmm net-start); "
        "delete it or give the network another --bridge");
  fails("net-stop", "lab", "network 'lab' is not active");
  EXPECT_TRUE(*hn::find_link("vmmlabbr0"));
  // A hand-written definition with a typo is refused with the member named.
  std::string f = state_ + "/networks/lab.json";
  std::string text = slurp(f);
  ASSERT_NE(text.find("\"autostart\""), std::string::npos);
  text.replace(text.find("\"autostart\""), 11, "\"autostrat\"");
  { std::ofstream(f) << text; }
  fails("net-info", "lab", f + ": unknown member 'autostrat'");
}

TEST_F(NetLifecycleTest, AVmOnTheNetworkTalksThroughTheBridge) {
  if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/kvm is missing or not read/write";
  if (access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/net/tun is not available";
  if (std::string(VMM_TEST_GUEST).empty()) GTEST_SKIP() << "the test guest was not built";
  ok("net-define", "lab --bridge vmmlabbr0 --subnet 10.77.0.1/24");
  ok("define",
     std::string("--name netvm --kernel ") + VMM_TEST_GUEST +
         " --memory 64M --cmdline 'nodisk net counter' --net network=lab,mac=02:00:00:aa:bb:01");
  EXPECT_EQ(ok("domiflist", "netvm").out,
            " Interface   Type      Source   Model    MAC\n"
            "------------------------------------------------------------\n"
            " -           network   lab      virtio   02:00:00:aa:bb:01\n\n");
  // An inactive network that is not autostarted stops the start with the command to run.
  fails("start", "netvm",
        "VM 'netvm' cannot start: network 'lab' is not active (vmm net-start lab)");
  // Marked autostart, the VM's start brings the network up.
  ok("net-autostart", "lab");
  // The guest sends about once a second until it hears back, and its VM ends once it has: the
  // listener starts after `vmm start` returned, so that the start sees the VM running.
  auto st = run_shell(vmm("start", "netvm"), dir_);
  EXPECT_EQ(st.rc, 0) << st.err;
  EXPECT_NE(st.err.find("vmm: started network 'lab' (autostart)"), std::string::npos) << st.err;
  auto br = hn::find_link("vmmlabbr0");
  ASSERT_TRUE(br && *br);
  int ps = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(vmm_test::kTestEtherType));
  ASSERT_GE(ps, 0) << strerror(errno);
  sockaddr_ll a{};
  a.sll_family = AF_PACKET;
  a.sll_protocol = htons(vmm_test::kTestEtherType);
  a.sll_ifindex = (*br)->index;
  ASSERT_EQ(bind(ps, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << strerror(errno);
  // While it runs, its tap is a port of the bridge.
  auto ports = run_shell("ip -o link show master vmmlabbr0", dir_);
  EXPECT_NE(ports.out.find("tap"), std::string::npos) << ports.out << ports.err;
  std::thread peer(vmm_test::answer_guest, ps, (*br)->index, dir_ + "/seen", 120000);
  peer.join();
  close(ps);
  EXPECT_EQ(slurp(dir_ + "/seen"), "02:00:00:aa:bb:01 vmm-guest-hello\n");
  std::string out;
  for (int i = 0; i < 600 && out.find("GUEST: PASS") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    out = slurp(state_ + "/run/netvm/console.log");
  }
  std::string log = slurp(state_ + "/run/netvm/log");
  EXPECT_NE(log.find(" on bridge vmmlabbr0, guest MAC 02:00:00:aa:bb:01"), std::string::npos)
      << log;
  EXPECT_NE(out.find("GUEST: net got 'vmm-host-reply'"), std::string::npos) << out << log;
  EXPECT_NE(out.find("GUEST: PASS"), std::string::npos) << out;
  // Running, domiflist names the tap vmm made, and domifstat counts the frames (the guest's
  // view: it sent at least one hello and received at least the 64-byte answer).
  std::string tap = log.substr(log.find("created tap ") + 12);
  tap = tap.substr(0, tap.find(' '));
  EXPECT_EQ(ok("domiflist", "netvm").out,
            " Interface   Type      Source   Model    MAC\n"
            "------------------------------------------------------------\n"
            " " +
                tap + std::string(12 - tap.size(), ' ') +
                "network   lab      virtio   02:00:00:aa:bb:01\n\n");
  std::string stats = ok("domifstat", "netvm " + tap).out;
  auto counter = [&](const std::string& k) {
    size_t at = stats.find(tap + " " + k + " ");
    return at == std::string::npos
               ? -1L
               : std::strtol(stats.c_str() + at + tap.size() + k.size() + 2, nullptr, 10);
  };
  EXPECT_GE(counter("rx_packets"), 1) << stats;
  EXPECT_GE(counter("rx_bytes"), 64) << stats;
  EXPECT_GE(counter("tx_packets"), 1) << stats;
  // Each hello is a 30-byte frame (14-byte Ethernet header, 16 bytes of text), counted without
  // the virtio-net header; how many went before the answer depends on timing.
  EXPECT_EQ(counter("tx_bytes"), 30 * counter("tx_packets")) << stats;
  EXPECT_EQ(counter("tx_errs"), 0) << stats;
  EXPECT_EQ(counter("rx_drop"), 0) << stats;
  // By MAC too; the counters may have moved on meanwhile (the bridge's own IPv6 chatter).
  EXPECT_TRUE(ok("domifstat", "netvm 02:00:00:aa:bb:01").out.starts_with(tap + " rx_bytes "));
  fails("domifstat", "netvm eth9", "VM 'netvm' has no interface 'eth9' (vmm domiflist netvm)");
  ok("destroy", "netvm");
  ASSERT_TRUE(wait_shut_off("netvm", 60));
  // The VM's tap went with it: the bridge has no port left.
  ports = run_shell("ip -o link show master vmmlabbr0", dir_);
  EXPECT_EQ(ports.out, "") << ports.err;
  // A network stopped under a VM's start is an error again once the mark is gone.
  ok("net-stop", "lab");
  ok("net-autostart", "lab --disable");
  fails("start", "netvm",
        "VM 'netvm' cannot start: network 'lab' is not active (vmm net-start lab)");
}

TEST_F(NetLifecycleTest, VmmRunOnABridge) {
  if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/kvm is missing or not read/write";
  if (std::string(VMM_TEST_GUEST).empty()) GTEST_SKIP() << "the test guest was not built";
  std::string run = std::string(VMM_BINARY) + " run --kernel " + VMM_TEST_GUEST +
                    " --memory 64M --cmdline 'nodisk net' ";
  auto r = run_shell(run + "--net bridge=vmmlabbr0", dir_);
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--net: bridge vmmlabbr0 does not exist"), std::string::npos) << r.err;
  r = run_shell(run + "--net network=lab", dir_);
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("a named network is for defined VMs (vmm start); vmm run takes bridge=BR"),
            std::string::npos)
      << r.err;
  ASSERT_EQ(vmm_test::make_tap("vmmlabtap9"), "");
  r = run_shell(run + "--net bridge=vmmlabtap9", dir_);
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--net: vmmlabtap9 is not a bridge"), std::string::npos) << r.err;
  (void)hn::delete_link("vmmlabtap9");
}

}  // namespace
