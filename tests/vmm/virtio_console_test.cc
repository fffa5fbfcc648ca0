// virtio-console (virtio/console/) through the PCI transport over fake guest memory, with the
// host side on a socketpair: configuration and features, guest output reaching the host in
// order, host input filling the guest's receive buffers, hostile chains, the emergency write, a
// peer that stops reading, end of input, and reset with buffers parked.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include "virtio/console/console_device.h"
#include "virtio/console/control.h"
#include "virtio_rig.h"

namespace vmm::testing {
namespace {

namespace vc = virtio::console;
using Buf = VirtioGuest::Buf;
constexpr uint64_t kBuf = 0x1000000;
constexpr unsigned kRx = vc::kReceiveQueue, kTx = vc::kTransmitQueue;

// Reads what the device wrote to a host end `fd` until `want` bytes arrived or 5 s passed.
std::string read_from_device(int fd, size_t want) {
  std::string out;
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (out.size() < want && std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    char b[4096];
    ssize_t n = read(fd, b, sizeof b);
    if (n <= 0) break;
    out.append(b, static_cast<size_t>(n));
  }
  return out;
}

struct VirtioConsole : ::testing::Test {
  int peer = -1;  // the host user's end
  std::unique_ptr<DeviceRig> rig;
  ~VirtioConsole() override {
    rig.reset();
    if (peer >= 0) close(peer);
  }
  void make(vc::ConsoleOptions o = {}, int sndbuf = 0) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    if (sndbuf) {
      setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
      setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof sndbuf);
    }
    o.host = {vc::ConsoleHostSpec::Kind::kFds, "", sv[0], sv[0]};
    auto d = vc::ConsoleDevice::create(o);
    dev_ = d ? d->get() : nullptr;
    rig = std::make_unique<DeviceRig>(as_device(std::move(d)));
    close(sv[0]);  // the device holds its own duplicate
    peer = sv[1];
    ASSERT_TRUE(rig->ok()) << rig->error;
    ASSERT_EQ(rig->guest.init(2, 16) & 0xf, 0xf);
  }
  VirtioGuest& g() { return rig->guest; }
  GuestRam& ram() { return rig->ram; }
  vc::ConsoleDevice* console() { return dev_; }
  vc::ConsoleDevice* dev_ = nullptr;  // owned by the rig
  uint16_t post(unsigned q, const std::vector<Buf>& bufs) {
    uint16_t head = g().write_chain(q, bufs);
    g().make_available(q, head);
    g().notify(q);
    return head;
  }
  void put_text(uint64_t at, const std::string& s) {
    std::memcpy(ram().at(at), s.data(), s.size());
  }
  std::string text(uint64_t at, size_t n) { return std::string(ram().at(at), ram().at(at) + n); }
  std::string host_read(size_t want) { return read_from_device(peer, want); }
  bool host_silent_for(int ms) {
    pollfd p{peer, POLLIN, 0};
    return poll(&p, 1, ms) == 0;
  }
};

TEST_F(VirtioConsole, IsAConsoleWithSizeAndEmergencyWrite) {
  make({.cols = 132, .rows = 43});
  EXPECT_EQ(rig->drv.cfg_read(0, 4), 0x10431af4u);     // device 0x1040 + 3
  EXPECT_EQ(rig->drv.cfg_read(8, 4) >> 8, 0x078000u);  // simple communication controller
  uint64_t f = g().features();
  EXPECT_TRUE(f & virtio::feature(vc::kFSize));
  EXPECT_TRUE(f & virtio::feature(vc::kFEmergWrite));
  EXPECT_FALSE(f & virtio::feature(vc::kFMultiport));
  uint64_t cfg = g().bar() + virtio::VirtioPciDevice::kDeviceCfgOffset;
  EXPECT_EQ(rig->drv.mmio_read(cfg + vc::cfg::kCols, 2), 132u);
  EXPECT_EQ(rig->drv.mmio_read(cfg + vc::cfg::kRows, 2), 43u);
  EXPECT_EQ(rig->drv.mmio_read(cfg + vc::cfg::kMaxNrPorts, 4), 1u);
  // Emergency write (§5.3.4): the byte reaches the host at once.
  rig->drv.mmio_write(cfg + vc::cfg::kEmergWr, 'Z', 4);
  EXPECT_EQ(host_read(1), "Z");
  // cols/rows are read-only.
  rig->drv.mmio_write(cfg + vc::cfg::kCols, 7, 2);
  EXPECT_EQ(rig->drv.mmio_read(cfg + vc::cfg::kCols, 2), 132u);
}

TEST_F(VirtioConsole, GuestOutputReachesTheHostInOrder) {
  make();
  put_text(kBuf, "hello ");
  put_text(kBuf + 0x100, "vir");
  put_text(kBuf + 0x200, "tio ");
  put_text(kBuf + 0x300, "console\n");
  post(kTx, {{kBuf, 6, false}});
  post(kTx, {{kBuf + 0x100, 3, false}, {kBuf + 0x200, 4, false}});
  post(kTx, {{kBuf + 0x300, 8, false}});
  EXPECT_EQ(host_read(21), "hello virtio console\n");
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kTx) == 3; }));
  for (uint16_t i = 0; i < 3; ++i) EXPECT_EQ(g().used_elem(kTx, i).second, 0u);
}

TEST_F(VirtioConsole, HostInputFillsReceiveBuffersAsItComes) {
  make();
  std::memset(ram().at(kBuf), '.', 0x300);
  uint16_t h0 = post(kRx, {{kBuf, 8, true}});
  uint16_t h1 = post(kRx, {{kBuf + 0x100, 4, true}, {kBuf + 0x200, 4, true}});
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(g().used_idx(kRx), 0) << "a receive buffer completed without input";
  ASSERT_EQ(write(peer, "abc", 3), 3);
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kRx) == 1; }));
  EXPECT_EQ(g().used_elem(kRx, 0), std::make_pair(uint32_t{h0}, 3u));
  EXPECT_EQ(text(kBuf, 4), "abc.");
  ASSERT_EQ(write(peer, "0123456789", 10), 10);  // more than the next buffer holds
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kRx) == 2; }));
  EXPECT_EQ(g().used_elem(kRx, 1), std::make_pair(uint32_t{h1}, 8u));
  EXPECT_EQ(text(kBuf + 0x100, 5) + text(kBuf + 0x200, 5), "0123.4567.");
  post(kRx, {{kBuf + 0x280, 16, true}});  // the rest waited in the socket
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kRx) == 3; }));
  EXPECT_EQ(g().used_elem(kRx, 2).second, 2u);
  EXPECT_EQ(text(kBuf + 0x280, 2), "89");
}

TEST_F(VirtioConsole, HostileChainsComeBackEmptyAndTouchNothing) {
  make();
  put_text(kBuf, "secret");
  std::memset(ram().at(kBuf + 0x100), '.', 16);
  // Transmit with a device-writable descriptor; receive with a device-readable one.
  post(kTx, {{kBuf, 6, false}, {kBuf + 0x100, 8, true}});
  post(kRx, {{kBuf, 6, false}});
  post(kRx, {{kBuf + 0x100, 0, true}});       // nothing to fill
  post(kTx, {{ram().size() - 2, 6, false}});  // runs off the end of guest memory
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kTx) == 2 && g().used_idx(kRx) == 2; }));
  for (unsigned q : {kRx, kTx})
    for (uint16_t i = 0; i < 2; ++i) EXPECT_EQ(g().used_elem(q, i).second, 0u);
  EXPECT_TRUE(host_silent_for(50)) << "a refused transmit chain reached the host";
  ASSERT_EQ(write(peer, "x", 1), 1);
  EXPECT_EQ(text(kBuf, 6), "secret");
  EXPECT_EQ(text(kBuf + 0x100, 16), std::string(16, '.'));
  EXPECT_EQ(rig->virtio().device_status() & virtio::kStatusNeedsReset, 0);
  post(kTx, {{kBuf, 6, false}});  // still serving
  EXPECT_EQ(host_read(6), "secret");
}

TEST_F(VirtioConsole, ResetWithParkedBuffersAndAStalledPeerReturnsAtOnce) {
  make({.max_request = 64 << 10}, /*sndbuf=*/4096);
  std::memset(ram().at(kBuf), 'o', 1 << 20);
  for (unsigned i = 0; i < 8; ++i)
    post(kTx, {{kBuf + i * 65536ull, 65536, false}});  // peer reads nothing
  std::memset(ram().at(kBuf + 0x200000), '.', 64);
  post(kRx, {{kBuf + 0x200000, 64, true}});
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_LT(g().used_idx(kTx), 8) << "the socket cannot have taken 512 KiB";
  auto t0 = std::chrono::steady_clock::now();
  rig->reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(500));
  EXPECT_EQ(g().status(), 0);
  // Input after the reset does not land in the old receive buffer.
  ASSERT_EQ(write(peer, "late", 4), 4);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(text(kBuf + 0x200000, 64), std::string(64, '.'));
  // After re-initialisation the device works, and the input is delivered now.
  ASSERT_EQ(g().init(2, 16) & 0xf, 0xf);
  post(kRx, {{kBuf + 0x200000, 64, true}});
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kRx) == 1; }));
  EXPECT_EQ(text(kBuf + 0x200000, 4), "late");
}

TEST_F(VirtioConsole, EndOfInputLeavesReceiveBuffersParked) {
  // A driver re-queues a buffer that came back empty at once (Linux's fill_readbuf), so giving
  // buffers back at end of input would make guest and device spin: they wait for a reset.
  make();
  post(kRx, {{kBuf, 8, true}});
  post(kRx, {{kBuf + 8, 8, true}});
  ASSERT_EQ(write(peer, "ab", 2), 2);
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kRx) == 1; }));
  shutdown(peer, SHUT_WR);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(g().used_idx(kRx), 1) << "a buffer came back empty at end of input";
  // Output still works.
  put_text(kBuf + 0x100, "bye");
  post(kTx, {{kBuf + 0x100, 3, false}});
  EXPECT_EQ(host_read(3), "bye");
}

TEST_F(VirtioConsole, AResizeIsAConfigChangeWithTheNewSize) {
  vc::ConsoleOptions o;
  o.cols = 80;
  o.rows = 24;
  make(o);
  auto* dev = console();
  uint64_t cfg = g().bar() + virtio::VirtioPciDevice::kDeviceCfgOffset;
  uint8_t gen = static_cast<uint8_t>(g().common(virtio::common::kConfigGeneration, 1));
  dev->resize(132, 43);
  ASSERT_TRUE(wait_for(
      [&] { return g().common(virtio::common::kConfigGeneration, 1) != gen; }))
      << "no config-change interrupt";
  EXPECT_EQ(rig->drv.mmio_read(cfg + vc::cfg::kCols, 2), 132u);
  EXPECT_EQ(rig->drv.mmio_read(cfg + vc::cfg::kRows, 2), 43u);
}

TEST(VirtioConsoleFile, OutputGoesToTheFileAndReceiveBuffersWait) {
  std::string path = temp_path("console-out");
  vc::ConsoleOptions o;
  o.host = {vc::ConsoleHostSpec::Kind::kFile, path, -1, -1};
  DeviceRig rig(as_device(vc::ConsoleDevice::create(o)));
  ASSERT_TRUE(rig.ok()) << rig.error;
  ASSERT_EQ(rig.guest.init(2, 16) & 0xf, 0xf);
  std::memcpy(rig.ram.at(kBuf), "to the file\n", 12);
  rig.guest.make_available(kRx, rig.guest.write_chain(kRx, {{kBuf + 0x100, 16, true}}));
  rig.guest.notify(kRx);
  rig.guest.make_available(kTx, rig.guest.write_chain(kTx, {{kBuf, 12, false}}));
  rig.guest.notify(kTx);
  ASSERT_TRUE(wait_for([&] { return rig.guest.used_idx(kTx) == 1; }));
  EXPECT_EQ(rig.guest.used_idx(kRx), 0) << "a file has no input: the buffer waits";
  auto bytes = file_bytes(path, 0, 12);
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()), "to the file\n");
  unlink(path.c_str());
}


// Multiport (virtio-serial): the console on port 0 and two named ports, each host end on its own
// socketpair, driven through the control queues the way Linux's virtio_console driver does.
struct VirtioSerial : ::testing::Test {
  static constexpr uint64_t kCtlRx = 0x2000000, kCtlTx = 0x2100000;
  static constexpr unsigned kCtlRxQ = vc::kControlReceiveQueue, kCtlTxQ = vc::kControlTransmitQueue;
  int con = -1, p1 = -1, p2 = -1;  // the host users' ends
  std::unique_ptr<DeviceRig> rig;
  vc::ConsoleDevice* dev = nullptr;
  unsigned ctl_rx_posted = 0, ctl_tx_sent = 0;
  uint16_t ctl_seen = 0;

  ~VirtioSerial() override {
    rig.reset();
    for (int fd : {con, p1, p2})
      if (fd >= 0) close(fd);
  }
  static int pair(int* mine) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    *mine = sv[1];
    return sv[0];
  }
  void make(bool with_console = true, uint16_t qsize = 64, uint64_t mask = ~0ull) {
    vc::ConsoleOptions o;
    std::vector<int> dev_ends;
    if (with_console) {
      int d = pair(&con);
      o.host = {vc::ConsoleHostSpec::Kind::kFds, "", d, d};
      dev_ends.push_back(d);
    }
    o.has_console = with_console;
    int d1 = pair(&p1), d2 = pair(&p2);
    o.ports = {{"org.example.0", {vc::ConsoleHostSpec::Kind::kFds, "", d1, d1}},
               {"agent", {vc::ConsoleHostSpec::Kind::kFds, "", d2, d2}}};
    auto d = vc::ConsoleDevice::create(o);
    dev = d ? d->get() : nullptr;
    rig = std::make_unique<DeviceRig>(as_device(std::move(d)));
    for (int fd : {d1, d2}) close(fd);
    for (int fd : dev_ends) close(fd);
    ASSERT_TRUE(rig->ok()) << rig->error;
    bool multi = mask & virtio::feature(vc::kFMultiport);
    ASSERT_EQ(g().init(multi ? 8 : 2, qsize, mask) & 0xf, 0xf);
  }
  VirtioGuest& g() { return rig->guest; }
  GuestRam& ram() { return rig->ram; }
  uint16_t post(unsigned q, const std::vector<Buf>& bufs) {
    uint16_t head = g().write_chain(q, bufs);
    g().make_available(q, head);
    g().notify(q);
    return head;
  }
  std::string text(uint64_t at, size_t n) { return std::string(ram().at(at), ram().at(at) + n); }
  void post_control_buffers(unsigned n) {
    for (unsigned i = 0; i < n; ++i, ++ctl_rx_posted)
      post(kCtlRxQ, {{kCtlRx + (ctl_rx_posted % 1024) * 256ull, 256, true}});
  }
  void send(uint32_t id, uint16_t event, uint16_t value, uint32_t len = 8) {
    uint64_t at = kCtlTx + (ctl_tx_sent++ % 4096) * 16ull;
    ram().put<uint32_t>(at, id);
    ram().put<uint16_t>(at + 4, event);
    ram().put<uint16_t>(at + 6, value);
    post(kCtlTxQ, {{at, len, false}});
  }
  // The control messages the device has sent since the last call, after waiting for `want`.
  std::vector<vc::ControlMsg> received(size_t want) {
    wait_for([&] { return static_cast<uint16_t>(g().used_idx(kCtlRxQ) - ctl_seen) >= want; });
    std::vector<vc::ControlMsg> out;
    for (; ctl_seen != g().used_idx(kCtlRxQ); ++ctl_seen) {
      auto [head, len] = g().used_elem(kCtlRxQ, ctl_seen);
      uint64_t addr = ram().get<uint64_t>(g().desc_gpa(kCtlRxQ, static_cast<uint16_t>(head)));
      auto m = vc::decode_control(std::span<const uint8_t>(
          reinterpret_cast<const uint8_t*>(ram().at(addr)), len));
      EXPECT_TRUE(m) << "a control message of " << len << " bytes";
      if (m) out.push_back(*m);
    }
    return out;
  }
  std::string host_read(int fd, size_t want) { return read_from_device(fd, want); }
  void handshake() {
    post_control_buffers(32);
    send(vc::ctl::kBadId, vc::ctl::kDeviceReady, 1);
    ASSERT_EQ(received(3).size(), 3u);
    for (uint32_t id : {0u, 1u, 2u}) send(id, vc::ctl::kPortReady, 1);
    ASSERT_EQ(received(7).size(), 7u);
  }
};

using Msg = vc::ControlMsg;
namespace ctl = vc::ctl;
std::vector<uint8_t> name_bytes(const std::string& s) { return {s.begin(), s.end()}; }

TEST_F(VirtioSerial, LinuxHandshakeThenEveryPortHasItsOwnHostEnd) {
  make();
  uint64_t f = g().features();
  ASSERT_TRUE(f & virtio::feature(vc::kFMultiport));
  uint64_t cfg = g().bar() + virtio::VirtioPciDevice::kDeviceCfgOffset;
  EXPECT_EQ(rig->drv.mmio_read(cfg + vc::cfg::kMaxNrPorts, 4), 3u);
  EXPECT_EQ(dev->num_queues(), 8u);

  post_control_buffers(32);
  send(ctl::kBadId, ctl::kDeviceReady, 1);
  EXPECT_EQ(received(3), (std::vector<Msg>{{0, ctl::kDeviceAdd, 1, {}},
                                           {1, ctl::kDeviceAdd, 1, {}},
                                           {2, ctl::kDeviceAdd, 1, {}}}));
  for (uint32_t id : {0u, 1u, 2u}) send(id, ctl::kPortReady, 1);
  EXPECT_EQ(received(7), (std::vector<Msg>{{0, ctl::kConsolePort, 1, {}},
                                           {0, ctl::kResize, 0, {80, 0, 24, 0}},
                                           {0, ctl::kPortOpen, 1, {}},
                                           {1, ctl::kPortName, 1, name_bytes("org.example.0")},
                                           {1, ctl::kPortOpen, 1, {}},
                                           {2, ctl::kPortName, 1, name_bytes("agent")},
                                           {2, ctl::kPortOpen, 1, {}}}));
  // Output: each port's transmit queue reaches its own host end.
  std::memcpy(ram().at(kBuf), "con", 3);
  std::memcpy(ram().at(kBuf + 0x100), "one", 3);
  std::memcpy(ram().at(kBuf + 0x200), "two", 3);
  post(1, {{kBuf, 3, false}});
  post(vc::port_receive_queue(1) + 1u, {{kBuf + 0x100, 3, false}});
  post(vc::port_receive_queue(2) + 1u, {{kBuf + 0x200, 3, false}});
  EXPECT_EQ(host_read(con, 3), "con");
  EXPECT_EQ(host_read(p1, 3), "one");
  EXPECT_EQ(host_read(p2, 3), "two");

  // Input for a named port waits until the guest opens it; the console's does not.
  const unsigned rx2 = vc::port_receive_queue(2);
  std::memset(ram().at(kBuf + 0x1000), '.', 16);
  post(rx2, {{kBuf + 0x1000, 16, true}});
  post(0, {{kBuf + 0x2000, 16, true}});
  ASSERT_EQ(write(p2, "in2", 3), 3);
  ASSERT_EQ(write(con, "in0", 3), 3);
  ASSERT_TRUE(wait_for([&] { return g().used_idx(0) == 1; }));
  EXPECT_EQ(text(kBuf + 0x2000, 3), "in0");
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(g().used_idx(rx2), 0) << "input delivered to a port nobody in the guest opened";
  send(2, ctl::kPortOpen, 1);
  ASSERT_TRUE(wait_for([&] { return g().used_idx(rx2) == 1; }));
  EXPECT_EQ(g().used_elem(rx2, 0).second, 3u);
  EXPECT_EQ(text(kBuf + 0x1000, 4), "in2.");
  EXPECT_EQ(g().used_idx(vc::port_receive_queue(1)), 0);
}

TEST_F(VirtioSerial, AHostEndThatGoesAwayIsPortOpenZero) {
  make();
  handshake();
  send(1, ctl::kPortOpen, 1);
  post(vc::port_receive_queue(1), {{kBuf, 16, true}});
  close(p1);  // the host user hangs up
  p1 = -1;
  EXPECT_EQ(received(1), (std::vector<Msg>{{1, ctl::kPortOpen, 0, {}}}));
  EXPECT_EQ(g().used_idx(vc::port_receive_queue(1)), 0) << "the buffer stays parked";
  // The other ports are untouched.
  std::memcpy(ram().at(kBuf + 0x100), "still", 5);
  post(vc::port_receive_queue(2) + 1u, {{kBuf + 0x100, 5, false}});
  EXPECT_EQ(host_read(p2, 5), "still");
}

TEST_F(VirtioSerial, AResizeIsAControlMessageForTheConsolePort) {
  make();
  handshake();
  dev->resize(100, 30);
  EXPECT_EQ(received(1), (std::vector<Msg>{{0, ctl::kResize, 0, {100, 0, 30, 0}}}));
}

TEST_F(VirtioSerial, HostileControlMessagesComeBackAndChangeNothing) {
  make();
  post_control_buffers(8);
  send(0, ctl::kPortOpen, 1, /*len=*/4);      // shorter than the header
  send(9, ctl::kPortReady, 1);                // no such port
  send(1, ctl::kPortName, 1);                 // an event only the device sends
  send(1, ctl::kPortOpen, 1);                 // before DEVICE_READY and PORT_READY
  post(kCtlTxQ, {{kCtlTx, 8, true}});         // a transmit buffer the device would write
  post(kCtlRxQ, {{kCtlRx + 0x10000, 8, false}});  // a receive buffer it could not write
  post(vc::port_receive_queue(1) + 1u, {{ram().size() - 2, 6, false}});  // off the end
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kCtlTxQ) == 5; }));
  for (uint16_t i = 0; i < 5; ++i) EXPECT_EQ(g().used_elem(kCtlTxQ, i).second, 0u);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(g().used_idx(kCtlRxQ), 1) << "only the refused receive buffer came back";
  ctl_seen = 1;
  EXPECT_EQ(rig->virtio().device_status() & virtio::kStatusNeedsReset, 0);
  // Still serving: the handshake works afterwards.
  send(ctl::kBadId, ctl::kDeviceReady, 1);
  EXPECT_EQ(received(3).size(), 3u);
}

TEST_F(VirtioSerial, ADriverThatPostsNoControlBuffersCannotGrowTheBacklog) {
  make(true, 256);
  send(ctl::kBadId, ctl::kDeviceReady, 1);              // 3 messages
  for (int i = 0; i < 150; ++i) send(1, ctl::kPortReady, 1);  // 2 each: 303 in all
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kCtlTxQ) == 151; }));
  post_control_buffers(256);
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kCtlRxQ) == 256; }));
  post_control_buffers(8);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(g().used_idx(kCtlRxQ), 256) << "more than the 256 held back came through";
}

TEST_F(VirtioSerial, ADriverWithoutMultiportSeesTheConsoleAlone) {
  make(true, 16, ~virtio::feature(vc::kFMultiport));
  std::memcpy(ram().at(kBuf), "plain", 5);
  post(1, {{kBuf, 5, false}});
  EXPECT_EQ(host_read(con, 5), "plain");
}

TEST_F(VirtioSerial, WithoutAConsoleThereIsNoPortZero) {
  make(/*with_console=*/false);
  post_control_buffers(8);
  send(ctl::kBadId, ctl::kDeviceReady, 1);
  EXPECT_EQ(received(2), (std::vector<Msg>{{1, ctl::kDeviceAdd, 1, {}},
                                           {2, ctl::kDeviceAdd, 1, {}}}));
  send(0, ctl::kPortReady, 1);  // refused: no port 0
  send(1, ctl::kPortReady, 1);
  EXPECT_EQ(received(2), (std::vector<Msg>{{1, ctl::kPortName, 1, name_bytes("org.example.0")},
                                           {1, ctl::kPortOpen, 1, {}}}));
}

TEST(VirtioSerialOptions, BadPortSetsAreRefusedByName) {
  auto with = [](std::vector<std::string> names, bool console) {
    vc::ConsoleOptions o;
    o.has_console = console;
    o.host = {vc::ConsoleHostSpec::Kind::kFile, "/dev/null", -1, -1};
    for (auto& n : names) o.ports.push_back({n, {vc::ConsoleHostSpec::Kind::kFile, "/dev/null", -1, -1}});
    auto d = vc::ConsoleDevice::create(o);
    return d ? std::string() : d.error().message();
  };
  EXPECT_EQ(with({"a", "b"}, true), "");
  EXPECT_NE(with({"a", "a"}, true).find("given twice"), std::string::npos);
  EXPECT_NE(with({"a b"}, true).find("only letters"), std::string::npos);
  EXPECT_NE(with({}, false).find("neither"), std::string::npos);
  EXPECT_NE(with(std::vector<std::string>(31, "x"), true).find("at most 30"), std::string::npos);
}

}  // namespace
}  // namespace vmm::testing
