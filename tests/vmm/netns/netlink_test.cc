// hostnet/netlink.h against the kernel, in this binary's own network namespace, with iproute2's
// `ip` as the independent judge of what the kernel now holds.
#include "hostnet/netlink.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "../run_shell.h"
#include "../tap_peer.h"
#include "netns.h"

namespace {

namespace hn = vmm::hostnet;

std::string ip(const std::string& args) {
  char t[] = "/tmp/vmmnl.XXXXXX";
  if (!mkdtemp(t)) return "mkdtemp failed";
  auto r = vmm_test::run_shell("ip " + args, t);
  std::system(("rm -rf " + std::string(t)).c_str());
  return r.out + r.err;
}

TEST(Netlink, BridgeMadeAddressedUpAndDeleted) {
  REQUIRE_NETNS();
  auto none = hn::find_link("vmmnlbr0");
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_FALSE(*none);
  ASSERT_TRUE(hn::create_bridge("vmmnlbr0"));
  auto l = hn::find_link("vmmnlbr0");
  ASSERT_TRUE(l && *l);
  EXPECT_EQ((*l)->kind, "bridge");
  EXPECT_FALSE((*l)->up);
  EXPECT_EQ(hn::link_name((*l)->index), "vmmnlbr0");
  EXPECT_NE(ip("-d link show vmmnlbr0").find("bridge "), std::string::npos);

  auto a = hn::parse_ipv4_cidr("10.9.8.1/24");
  ASSERT_TRUE(a);
  ASSERT_TRUE(hn::add_ipv4_address("vmmnlbr0", a->addr, a->prefix));
  std::string addr = ip("-4 -o addr show dev vmmnlbr0");
  EXPECT_NE(addr.find("inet 10.9.8.1/24 brd 10.9.8.255"), std::string::npos) << addr;
  ASSERT_TRUE(hn::set_link_up("vmmnlbr0", true));
  EXPECT_TRUE((*hn::find_link("vmmnlbr0"))->up);
  EXPECT_NE(ip("-o link show vmmnlbr0").find(",UP"), std::string::npos);

  auto again = hn::create_bridge("vmmnlbr0");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().message(), "bridge vmmnlbr0: a link of that name already exists");
  ASSERT_TRUE(hn::delete_link("vmmnlbr0"));
  EXPECT_FALSE(*hn::find_link("vmmnlbr0"));
  EXPECT_EQ(ip("link show vmmnlbr0").find("vmmnlbr0:"), std::string::npos);
  auto gone = hn::delete_link("vmmnlbr0");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().message(), "link vmmnlbr0 does not exist");
}

TEST(Netlink, ATapJoinsABridgeAndOnlyABridge) {
  REQUIRE_NETNS();
  if (access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/net/tun is not available";
  ASSERT_EQ(vmm_test::make_tap("vmmnltap0"), "");
  ASSERT_TRUE(hn::create_bridge("vmmnlbr1"));
  ASSERT_TRUE(hn::set_master("vmmnltap0", "vmmnlbr1"));
  auto tap = hn::find_link("vmmnltap0");
  ASSERT_TRUE(tap && *tap);
  EXPECT_EQ((*tap)->kind, "tun");
  EXPECT_EQ((*tap)->master, (*hn::find_link("vmmnlbr1"))->index);
  EXPECT_NE(ip("-o link show master vmmnlbr1").find("vmmnltap0"), std::string::npos);

  auto not_bridge = hn::set_master("vmmnlbr1", "vmmnltap0");
  ASSERT_FALSE(not_bridge);
  EXPECT_EQ(not_bridge.error().message(), "vmmnltap0 is not a bridge");
  auto missing = hn::set_master("vmmnltap0", "vmmnlnone");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message(), "bridge vmmnlnone does not exist");
  // Deleting the bridge frees its port, as the kernel does for `ip link del`.
  ASSERT_TRUE(hn::delete_link("vmmnlbr1"));
  EXPECT_EQ((*hn::find_link("vmmnltap0"))->master, 0);
  ASSERT_TRUE(hn::delete_link("vmmnltap0"));
}

TEST(Netlink, NamesAndSubnetsAreChecked) {
  for (const char* bad : {"", "sixteen-chars-xx", "a/b", "a:b", "a b", "."}) {
    EXPECT_FALSE(hn::check_link_name(bad, "bridge")) << bad;
  }
  EXPECT_TRUE(hn::check_link_name("br-lab.0", "bridge"));
  EXPECT_EQ(hn::check_link_name("sixteen-chars-xx", "bridge").error().message(),
            "bridge name 'sixteen-chars-xx' must be 1 to 15 characters");
  auto c = hn::parse_ipv4_cidr("192.168.100.1/24");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->addr, 0xc0a86401u);
  EXPECT_EQ(c->prefix, 24);
  EXPECT_EQ(hn::format_ipv4_cidr(*c), "192.168.100.1/24");
  for (const char* bad : {"192.168.100.1", "192.168.100.1/", "1.2.3/8", "1.2.3.4/x", "fe80::1/64",
                          "1.2.3.4/24/1", "1.2.3.4/123"}) {
    auto r = hn::parse_ipv4_cidr(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message().find("must be an IPv4 address with a prefix length"),
              std::string::npos)
        << r.error().message();
  }
  EXPECT_EQ(hn::parse_ipv4_cidr("10.0.0.1/31").error().message(),
            "subnet '10.0.0.1/31': the prefix length must be 1 to 30");
}

}  // namespace
