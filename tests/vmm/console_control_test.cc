// The virtio-console multiport control protocol (virtio/console/control.h) on its own: the
// handshake Linux's virtio_console driver performs, what the host side changes later, and the
// driver messages it must refuse without changing anything.
#include <gtest/gtest.h>

#include "virtio/console/control.h"

namespace vmm::virtio::console {
namespace {

using Msgs = std::vector<ControlMsg>;

ControlMsg msg(uint32_t id, uint16_t event, uint16_t value, std::vector<uint8_t> extra = {}) {
  return {id, event, value, std::move(extra)};
}
std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }

struct PortControlTest : ::testing::Test {
  // Port 0 the console, ports 1 and 2 named: what `--console ... --serial-port x2` makes.
  PortControl pc{{{0, "", true}, {1, "org.example.0", false}, {2, "agent", false}}, 80, 24};
  Msgs out;
};

TEST_F(PortControlTest, LinuxHandshakeAddsEveryPortAndAnnouncesEachOnceReady) {
  ASSERT_TRUE(pc.on_driver(msg(ctl::kBadId, ctl::kDeviceReady, 1), out));
  EXPECT_TRUE(pc.device_ready());
  EXPECT_EQ(out, (Msgs{msg(0, ctl::kDeviceAdd, 1), msg(1, ctl::kDeviceAdd, 1),
                       msg(2, ctl::kDeviceAdd, 1)}));
  out.clear();
  ASSERT_TRUE(pc.on_driver(msg(0, ctl::kPortReady, 1), out));
  // The console: CONSOLE_PORT, its size (cols 80 = 0x50, rows 24 = 0x18), host connected.
  EXPECT_EQ(out, (Msgs{msg(0, ctl::kConsolePort, 1), msg(0, ctl::kResize, 0, {0x50, 0, 0x18, 0}),
                       msg(0, ctl::kPortOpen, 1)}));
  EXPECT_TRUE(pc.guest_open(0)) << "a console port is open once ready";
  out.clear();
  ASSERT_TRUE(pc.on_driver(msg(1, ctl::kPortReady, 1), out));
  EXPECT_EQ(out, (Msgs{msg(1, ctl::kPortName, 1, bytes("org.example.0")),
                       msg(1, ctl::kPortOpen, 1)}));
  EXPECT_FALSE(pc.guest_open(1)) << "a named port opens when the guest opens it";
  out.clear();
  ASSERT_TRUE(pc.on_driver(msg(1, ctl::kPortOpen, 1), out));
  EXPECT_TRUE(out.empty());
  EXPECT_TRUE(pc.guest_open(1));
  EXPECT_FALSE(pc.guest_open(2));
  ASSERT_TRUE(pc.on_driver(msg(1, ctl::kPortOpen, 0), out));
  EXPECT_FALSE(pc.guest_open(1));
}

TEST_F(PortControlTest, HostChangesReachOnlyPortsTheDriverHasReadied) {
  pc.set_host_connected(2, false, out);
  pc.resize(132, 43, out);
  EXPECT_TRUE(out.empty()) << "nothing may be sent about a port the driver does not know yet";
  ASSERT_TRUE(pc.on_driver(msg(ctl::kBadId, ctl::kDeviceReady, 1), out));
  out.clear();
  ASSERT_TRUE(pc.on_driver(msg(0, ctl::kPortReady, 1), out));
  EXPECT_EQ(out[1], msg(0, ctl::kResize, 0, {132, 0, 43, 0})) << "the size given while unready";
  out.clear();
  ASSERT_TRUE(pc.on_driver(msg(2, ctl::kPortReady, 1), out));
  EXPECT_EQ(out, (Msgs{msg(2, ctl::kPortName, 1, bytes("agent"))}))
      << "a host end already gone is not announced open";
  out.clear();
  pc.set_host_connected(2, true, out);
  pc.set_host_connected(2, true, out);  // no change, no message
  pc.resize(100, 30, out);
  EXPECT_EQ(out, (Msgs{msg(2, ctl::kPortOpen, 1), msg(0, ctl::kResize, 0, {100, 0, 30, 0})}));
}

TEST_F(PortControlTest, HostileDriverMessagesAreRefusedByNameAndChangeNothing) {
  ASSERT_TRUE(pc.on_driver(msg(ctl::kBadId, ctl::kDeviceReady, 1), out));
  out.clear();
  struct Case {
    ControlMsg m;
    const char* says;
  } cases[] = {
      {msg(7, ctl::kPortReady, 1), "no port 7"},
      {msg(ctl::kBadId, ctl::kPortOpen, 1), "no port 4294967295"},
      {msg(1, ctl::kPortOpen, 1), "before it is ready"},
      {msg(1, ctl::kDeviceAdd, 1), "PORT_ADD"},
      {msg(1, ctl::kPortName, 1, bytes("evil")), "PORT_NAME"},
      {msg(0, ctl::kResize, 1), "RESIZE"},
      {msg(0, 0xffff, 1), "unknown event"},
      {msg(ctl::kBadId, ctl::kDeviceReady, 0), "failed to set the device up"},
  };
  for (const Case& c : cases) {
    auto s = pc.on_driver(c.m, out);
    ASSERT_FALSE(s) << c.says;
    EXPECT_NE(s.error().message().find(c.says), std::string::npos) << s.error().message();
  }
  EXPECT_TRUE(out.empty());
  for (uint32_t id : {0u, 1u, 2u}) {
    EXPECT_FALSE(pc.port_ready(id));
    EXPECT_FALSE(pc.guest_open(id));
  }
  // A driver that failed to add a port says so; the port stays unready.
  EXPECT_FALSE(pc.on_driver(msg(1, ctl::kPortReady, 0), out));
  EXPECT_FALSE(pc.port_ready(1));
}

TEST_F(PortControlTest, ResetForgetsWhatTheDriverWasTold) {
  ASSERT_TRUE(pc.on_driver(msg(ctl::kBadId, ctl::kDeviceReady, 1), out));
  ASSERT_TRUE(pc.on_driver(msg(1, ctl::kPortReady, 1), out));
  ASSERT_TRUE(pc.on_driver(msg(1, ctl::kPortOpen, 1), out));
  pc.reset();
  EXPECT_FALSE(pc.device_ready());
  EXPECT_FALSE(pc.port_ready(1));
  EXPECT_FALSE(pc.guest_open(1));
}

TEST(ConsoleControlWire, EncodesAndDecodesLittleEndianWithTheTrailingBytes) {
  ControlMsg m = msg(0x01020304, ctl::kPortName, 1, bytes("ab"));
  std::vector<uint8_t> w = encode_control(m);
  EXPECT_EQ(w, (std::vector<uint8_t>{4, 3, 2, 1, 7, 0, 1, 0, 'a', 'b'}));
  auto d = decode_control(w);
  ASSERT_TRUE(d);
  EXPECT_EQ(*d, m);
  auto shorter = decode_control(std::span(w).first(7));
  ASSERT_FALSE(shorter);
  EXPECT_NE(shorter.error().message().find("7 bytes"), std::string::npos);
}

TEST(ConsoleControlWire, PortNamesAreWhatUdevKeeps) {
  EXPECT_EQ(check_port_name("org.qemu.guest_agent.0"), "");
  EXPECT_EQ(check_port_name(std::string(128, 'a')), "");
  EXPECT_NE(check_port_name(""), "");
  EXPECT_NE(check_port_name(std::string(129, 'a')).find("at most 128"), std::string::npos);
  for (const char* bad : {"a/b", "a b", "a,b", "..\n", "na\xc3\xafve"})
    EXPECT_NE(check_port_name(bad), "") << bad;
}

}  // namespace
}  // namespace vmm::virtio::console
