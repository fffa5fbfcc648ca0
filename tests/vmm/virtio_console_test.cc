// virtio-console (virtio/console/) through the PCI transport over fake guest memory, with the
// host side on a socketpair: configuration and features, guest output reaching the host in
// order, host input filling the guest's receive buffers, hostile chains, the emergency write, a
// peer that stops reading, end of input, and reset with buffers parked.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include "virtio/console/console_device.h"
#include "virtio_rig.h"

namespace vmm::testing {
namespace {

namespace vc = virtio::console;
using Buf = VirtioGuest::Buf;
constexpr uint64_t kBuf = 0x1000000;
constexpr unsigned kRx = vc::kReceiveQueue, kTx = vc::kTransmitQueue;

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
    rig = std::make_unique<DeviceRig>(as_device(vc::ConsoleDevice::create(o)));
    close(sv[0]);  // the device holds its own duplicate
    peer = sv[1];
    ASSERT_TRUE(rig->ok()) << rig->error;
    ASSERT_EQ(rig->guest.init(2, 16) & 0xf, 0xf);
  }
  VirtioGuest& g() { return rig->guest; }
  GuestRam& ram() { return rig->ram; }
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
  // Reads what the device wrote to the host until `want` bytes arrived or 5 s passed.
  std::string host_read(size_t want) {
    std::string out;
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (out.size() < want && std::chrono::steady_clock::now() < end) {
      pollfd p{peer, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char b[4096];
      ssize_t n = read(peer, b, sizeof b);
      if (n <= 0) break;
      out.append(b, static_cast<size_t>(n));
    }
    return out;
  }
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

TEST_F(VirtioConsole, EndOfInputReturnsReceiveBuffersEmpty) {
  make();
  post(kRx, {{kBuf, 8, true}});
  post(kRx, {{kBuf + 8, 8, true}});
  shutdown(peer, SHUT_WR);
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kRx) == 2; }));
  EXPECT_EQ(g().used_elem(kRx, 0).second, 0u);
  EXPECT_EQ(g().used_elem(kRx, 1).second, 0u);
  post(kRx, {{kBuf, 8, true}});  // later buffers too, at once
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kRx) == 3; }));
  // Output still works.
  put_text(kBuf + 0x100, "bye");
  post(kTx, {{kBuf + 0x100, 3, false}});
  EXPECT_EQ(host_read(3), "bye");
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

}  // namespace
}  // namespace vmm::testing
