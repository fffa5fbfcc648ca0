// virtio-net (virtio/net/) through the PCI transport over fake guest memory. The tap is a
// SOCK_SEQPACKET socketpair (one message per frame, vnet header first, as a tap with
// IFF_VNET_HDR behaves), so these tests need no privileges; one test opens a real tap inside a
// network namespace of its own where the host allows it. Covered: identity, MAC and offload
// features, transmit (split header, no reshaping), receive into one buffer and merged across
// several, packets waiting for buffers, hostile chains and headers, and reset with work parked.
#include <gtest/gtest.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "virtio/net/net_device.h"
#include "virtio/net/net_spec.h"
#include "virtio_rig.h"

namespace vmm::testing {
namespace {

namespace vn = virtio::net;
using Buf = VirtioGuest::Buf;
constexpr uint64_t kBuf = 0x1000000;
constexpr unsigned kRx = vn::kRxQueue, kTx = vn::kTxQueue;
constexpr uint32_t kHdr = vn::hdr::kSize;

uint64_t bit(unsigned b) { return virtio::feature(b); }

// A frame: broadcast destination, a source, ethertype 0x88b5 (IEEE local experimental), payload.
std::vector<uint8_t> frame(size_t len, uint8_t seed) {
  std::vector<uint8_t> f(len);
  for (size_t i = 0; i < len; ++i) f[i] = static_cast<uint8_t>(seed + i * 7);
  std::memset(f.data(), 0xff, 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  return f;
}

struct VirtioNet : ::testing::Test {
  int peer = -1;  // the network's end of the stand-in tap
  std::unique_ptr<DeviceRig> rig;
  vn::NetDevice* net = nullptr;
  ~VirtioNet() override {
    rig.reset();
    if (peer >= 0) close(peer);
  }
  void make(uint32_t offloads = 0, uint64_t mask = ~0ull, std::optional<vn::Mac> mac = {}) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    vn::NetOptions o;
    o.tap = {vn::TapSpec::Kind::kFd, "", sv[0], offloads};
    o.mac = mac;
    auto d = vn::NetDevice::create(o);
    ASSERT_TRUE(d) << d.error().to_string();
    net = d->get();
    rig = std::make_unique<DeviceRig>(as_device(std::move(d)));
    close(sv[0]);  // the device holds its own duplicate
    peer = sv[1];
    ASSERT_TRUE(rig->ok()) << rig->error;
    ASSERT_EQ(rig->guest.init(2, 64, mask) & 0xf, 0xf);
  }
  VirtioGuest& g() { return rig->guest; }
  GuestRam& ram() { return rig->ram; }
  uint16_t post(unsigned q, const std::vector<Buf>& bufs) {
    uint16_t head = g().write_chain(q, bufs);
    g().make_available(q, head);
    g().notify(q);
    return head;
  }
  void put(uint64_t at, const std::vector<uint8_t>& b) {
    std::memcpy(ram().at(at), b.data(), b.size());
  }
  std::vector<uint8_t> get(uint64_t at, size_t n) { return {ram().at(at), ram().at(at) + n}; }
  // A transmit header with the given flags/gso fields at `at`.
  void put_hdr(uint64_t at, uint8_t flags = 0, uint8_t gso = 0, uint16_t gso_size = 0,
               uint16_t csum_start = 0, uint16_t csum_off = 0) {
    std::memset(ram().at(at), 0, kHdr);
    ram().put<uint8_t>(at + vn::hdr::kFlags, flags);
    ram().put<uint8_t>(at + vn::hdr::kGsoType, gso);
    ram().put<uint16_t>(at + vn::hdr::kGsoSize, gso_size);
    ram().put<uint16_t>(at + vn::hdr::kCsumStart, csum_start);
    ram().put<uint16_t>(at + vn::hdr::kCsumOffset, csum_off);
  }
  // One message from the device, or empty after 2 s.
  std::vector<uint8_t> host_recv(int ms = 2000) {
    pollfd p{peer, POLLIN, 0};
    if (poll(&p, 1, ms) <= 0) return {};
    std::vector<uint8_t> b(vn::kMaxPacket + 16);
    ssize_t n = recv(peer, b.data(), b.size(), 0);
    b.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return b;
  }
  // Sends header (zero but for bytes given) + frame as one message.
  void host_send(const std::vector<uint8_t>& f, uint8_t hdr_flags = 0) {
    std::vector<uint8_t> m(kHdr, 0);
    m[vn::hdr::kFlags] = hdr_flags;
    m[vn::hdr::kNumBuffers] = 0xee;  // the tap leaves these bytes alone; the device must set them
    m.insert(m.end(), f.begin(), f.end());
    ASSERT_EQ(send(peer, m.data(), m.size(), 0), static_cast<ssize_t>(m.size()));
  }
  uint16_t num_buffers(uint64_t at) { return ram().get<uint16_t>(at + vn::hdr::kNumBuffers); }
};

TEST_F(VirtioNet, IsANetDeviceWithItsMacAndTheLinkUp) {
  make(0, ~0ull, vn::Mac{0x02, 0x11, 0x22, 0x33, 0x44, 0x55});
  EXPECT_EQ(rig->drv.cfg_read(0, 4), 0x10411af4u);     // device 0x1040 + 1
  EXPECT_EQ(rig->drv.cfg_read(8, 4) >> 8, 0x020000u);  // network controller, Ethernet
  uint64_t f = g().features();
  EXPECT_TRUE(f & bit(vn::kFMac));
  EXPECT_TRUE(f & bit(vn::kFStatus));
  EXPECT_TRUE(f & bit(vn::kFMrgRxbuf));
  EXPECT_FALSE(f & bit(vn::kFCtrlVq));
  // A stand-in that accepts no offloads: none offered.
  for (unsigned b : {vn::kFCsum, vn::kFGuestCsum, vn::kFHostTso4, vn::kFGuestTso4, vn::kFHostTso6,
                     vn::kFGuestTso6, vn::kFHostEcn, vn::kFGuestEcn})
    EXPECT_FALSE(f & bit(b)) << b;
  uint64_t cfg = g().bar() + virtio::VirtioPciDevice::kDeviceCfgOffset;
  std::string mac;
  for (unsigned i = 0; i < 6; ++i)
    mac += img::strfmt("%02x", (unsigned)rig->drv.mmio_read(cfg + i, 1));
  EXPECT_EQ(mac, "021122334455");
  EXPECT_EQ(rig->drv.mmio_read(cfg + vn::cfg::kStatus, 2), vn::kStatusLinkUp);
  EXPECT_EQ(rig->drv.mmio_read(cfg + vn::cfg::kMaxVirtqueuePairs, 2), 1u);
}

TEST(VirtioNetMac, GeneratedMacIsLocallyAdministeredUnicastAndStablePerTap) {
  vn::Mac a = vn::stable_mac("tap0"), b = vn::stable_mac("tap0"), c = vn::stable_mac("tap1");
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  for (const vn::Mac& m : {a, c}) {
    EXPECT_EQ(m[0] & 3, 2) << vn::format_mac(m);  // local bit set, group bit clear
  }
  EXPECT_EQ(vn::format_mac({0x02, 0, 0xab, 1, 2, 0xff}), "02:00:ab:01:02:ff");
}

TEST_F(VirtioNet, OffloadsAreOfferedWhereTheTapTakesThemAndChecked) {
  make(vn::kTunFCsum | vn::kTunFTso4 | vn::kTunFTso6);
  uint64_t f = g().features();
  for (unsigned b : {vn::kFCsum, vn::kFGuestCsum, vn::kFHostTso4, vn::kFGuestTso4, vn::kFHostTso6,
                     vn::kFGuestTso6})
    EXPECT_TRUE(f & bit(b)) << b;
  EXPECT_FALSE(f & bit(vn::kFHostEcn)) << "ECN offered though the tap refused TSO_ECN";
  // §5.1.3.1: GUEST_TSO4 without GUEST_CSUM is refused at FEATURES_OK.
  uint64_t bad = ~bit(vn::kFGuestCsum);
  EXPECT_EQ(g().init(2, 64, bad) & 0x8, 0) << "FEATURES_OK accepted GUEST_TSO4 without GUEST_CSUM";
  EXPECT_EQ(g().init(2, 64) & 0xf, 0xf);
}

TEST_F(VirtioNet, TransmitSendsHeaderAndFrameAsOneMessage) {
  make();
  auto f = frame(1500, 3);
  // Header split over two descriptors, the frame over three, one of them holding header bytes.
  put_hdr(kBuf);
  put(kBuf + 0x1000, {f.begin(), f.begin() + 100});
  put(kBuf + 0x2000, {f.begin() + 100, f.begin() + 1000});
  put(kBuf + 0x3000, {f.begin() + 1000, f.end()});
  std::memcpy(ram().at(kBuf + 0x4000), ram().at(kBuf + 8), 4);  // header bytes 8..11
  uint16_t head = post(kTx, {{kBuf, 8, false},
                             {kBuf + 0x4000, 4, false},
                             {kBuf + 0x1000, 100, false},
                             {kBuf + 0x2000, 900, false},
                             {kBuf + 0x3000, 500, false}});
  auto m = host_recv();
  ASSERT_EQ(m.size(), kHdr + 1500);
  EXPECT_EQ(std::vector<uint8_t>(m.begin(), m.begin() + kHdr), std::vector<uint8_t>(kHdr, 0));
  EXPECT_EQ(std::vector<uint8_t>(m.begin() + kHdr, m.end()), f);
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kTx) == 1; }));
  EXPECT_EQ(g().used_elem(kTx, 0), std::make_pair(uint32_t{head}, 0u));
}

TEST_F(VirtioNet, TransmitWithChecksumAndTsoHeadersWhenNegotiated) {
  make(vn::kTunFCsum | vn::kTunFTso4 | vn::kTunFTso6);
  auto f = frame(3000, 9);
  put_hdr(kBuf, vn::kHdrFNeedsCsum, vn::kGsoTcpv4, 1448, 34, 16);
  put(kBuf + kHdr, f);
  post(kTx, {{kBuf, static_cast<uint32_t>(kHdr + f.size()), false}});
  auto m = host_recv();
  ASSERT_EQ(m.size(), kHdr + f.size());
  EXPECT_EQ(m[vn::hdr::kFlags], vn::kHdrFNeedsCsum);
  EXPECT_EQ(m[vn::hdr::kGsoType], vn::kGsoTcpv4);
  EXPECT_EQ(m[vn::hdr::kGsoSize] | m[vn::hdr::kGsoSize + 1] << 8, 1448);
  EXPECT_EQ(m[vn::hdr::kCsumStart], 34);
}

TEST_F(VirtioNet, ReceiveFillsOneBufferAndSetsNumBuffers) {
  make(0, ~bit(vn::kFMrgRxbuf));
  std::memset(ram().at(kBuf), '.', 0x2000);
  uint16_t h = post(kRx, {{kBuf, 1000, true}, {kBuf + 0x1000, 1000, true}});
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(g().used_idx(kRx), 0) << "a receive buffer completed without a frame";
  auto f = frame(1200, 5);
  host_send(f);
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kRx) == 1; }));
  EXPECT_EQ(g().used_elem(kRx, 0), std::make_pair(uint32_t{h}, uint32_t{kHdr + 1200}));
  EXPECT_EQ(num_buffers(kBuf), 1);  // §5.1.6.3.1: 1 without MRG_RXBUF
  auto got = get(kBuf + kHdr, 1000 - kHdr);
  auto rest = get(kBuf + 0x1000, 1200 - (1000 - kHdr));
  got.insert(got.end(), rest.begin(), rest.end());
  EXPECT_EQ(got, f);
  EXPECT_EQ(ram().get<uint8_t>(kBuf + 0x1000 + rest.size()), '.');
}

TEST_F(VirtioNet, MergeableReceiveSpreadsAPacketOverSeveralBuffers) {
  make();
  ASSERT_TRUE(g().features() & bit(vn::kFMrgRxbuf));
  uint16_t h[3];
  for (unsigned i = 0; i < 3; ++i) h[i] = post(kRx, {{kBuf + i * 0x1000ull, 1000, true}});
  auto f = frame(2500 - kHdr, 1);
  host_send(f);
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kRx) == 3; }));
  EXPECT_EQ(g().used_elem(kRx, 0), std::make_pair(uint32_t{h[0]}, 1000u));
  EXPECT_EQ(g().used_elem(kRx, 1), std::make_pair(uint32_t{h[1]}, 1000u));
  EXPECT_EQ(g().used_elem(kRx, 2), std::make_pair(uint32_t{h[2]}, 500u));
  EXPECT_EQ(num_buffers(kBuf), 3);
  std::vector<uint8_t> got = get(kBuf + kHdr, 1000 - kHdr);
  for (unsigned i = 1; i < 3; ++i) {
    auto p = get(kBuf + i * 0x1000ull, i == 2 ? 500 : 1000);
    got.insert(got.end(), p.begin(), p.end());
  }
  EXPECT_EQ(got, f);
}

TEST_F(VirtioNet, PacketsWaitForBuffersAndArriveInOrder) {
  make();
  host_send(frame(1400, 1));
  host_send(frame(60, 2));
  host_send(frame(1400, 3));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  post(kRx, {{kBuf, 1024, true}});  // the first packet needs two of these
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(g().used_idx(kRx), 0) << "a packet was delivered into too little room";
  for (unsigned i = 1; i < 5; ++i) post(kRx, {{kBuf + i * 0x1000ull, 1024, true}});
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kRx) == 5; }));
  EXPECT_EQ(num_buffers(kBuf), 2);
  EXPECT_EQ(get(kBuf + kHdr, 20), std::vector<uint8_t>(frame(20, 1)));
  EXPECT_EQ(num_buffers(kBuf + 0x2000), 1);
  EXPECT_EQ(g().used_elem(kRx, 2).second, kHdr + 60);
  EXPECT_EQ(get(kBuf + 0x2000 + kHdr, 60), frame(60, 2));
  EXPECT_EQ(num_buffers(kBuf + 0x3000), 2);
  EXPECT_EQ(get(kBuf + 0x3000 + kHdr, 20), std::vector<uint8_t>(frame(20, 3)));
}

TEST_F(VirtioNet, WithoutMergeableBuffersAPacketTooBigIsDroppedAndTheNextDelivered) {
  make(0, ~bit(vn::kFMrgRxbuf));
  post(kRx, {{kBuf, 600, true}});
  host_send(frame(1000, 1));  // does not fit 600 bytes: dropped
  host_send(frame(100, 2));
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kRx) == 1; }));
  EXPECT_EQ(g().used_elem(kRx, 0).second, kHdr + 100);
  EXPECT_EQ(get(kBuf + kHdr, 100), frame(100, 2));
}

TEST_F(VirtioNet, HostileTransmitChainsComeBackEmptyAndSendNothing) {
  make();  // no CSUM, no TSO negotiated
  put_hdr(kBuf);
  put(kBuf + kHdr, frame(64, 1));
  ram().put<uint8_t>(kBuf + 0x800000, 0);
  post(kTx, {{kBuf, kHdr, false}});                                  // a header and no frame
  post(kTx, {{kBuf, 8, false}});                                     // shorter than the header
  post(kTx, {{kBuf, kHdr + 64, false}, {kBuf + 0x2000, 16, true}});  // a writable descriptor
  // Longer than 64 KiB + header: 70000 bytes over two descriptors.
  post(kTx, {{kBuf, 40000, false}, {kBuf + 0x10000, 30000, false}});
  put_hdr(kBuf + 0x100000, vn::kHdrFNeedsCsum, 0, 0, 10, 6);  // NEEDS_CSUM without CSUM
  put(kBuf + 0x100000 + kHdr, frame(64, 1));
  post(kTx, {{kBuf + 0x100000, kHdr + 64, false}});
  put_hdr(kBuf + 0x200000, 0, vn::kGsoTcpv4, 1448);  // TSO without HOST_TSO4
  put(kBuf + 0x200000 + kHdr, frame(64, 1));
  post(kTx, {{kBuf + 0x200000, kHdr + 64, false}});
  put_hdr(kBuf + 0x300000, vn::kHdrFDataValid);  // a receive-only flag
  put(kBuf + 0x300000 + kHdr, frame(64, 1));
  post(kTx, {{kBuf + 0x300000, kHdr + 64, false}});
  post(kTx, {{ram().size() - 8, 64, false}});  // runs off the end of guest memory
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kTx) == 8; }));
  for (uint16_t i = 0; i < 8; ++i) EXPECT_EQ(g().used_elem(kTx, i).second, 0u) << i;
  EXPECT_TRUE(host_recv(50).empty()) << "a refused transmit chain reached the tap";
  EXPECT_EQ(rig->virtio().device_status() & virtio::kStatusNeedsReset, 0);
  post(kTx, {{kBuf, kHdr + 64, false}});  // still serving
  EXPECT_EQ(host_recv().size(), kHdr + 64);
}

TEST_F(VirtioNet, HostileTransmitHeadersWithOffloadsNegotiated) {
  make(vn::kTunFCsum | vn::kTunFTso4 | vn::kTunFTso6);
  auto f = frame(100, 1);
  put_hdr(kBuf, vn::kHdrFNeedsCsum, 0, 0, 90, 10);  // checksum field past the frame's end
  put(kBuf + kHdr, f);
  post(kTx, {{kBuf, kHdr + 100, false}});
  put_hdr(kBuf + 0x1000, vn::kHdrFNeedsCsum, vn::kGsoTcpv4, 0, 34, 16);  // TSO, no MSS
  put(kBuf + 0x1000 + kHdr, f);
  post(kTx, {{kBuf + 0x1000, kHdr + 100, false}});
  put_hdr(kBuf + 0x2000, vn::kHdrFNeedsCsum, vn::kGsoTcpv4 | vn::kGsoEcn, 1448, 34, 16);
  put(kBuf + 0x2000 + kHdr, f);  // ECN, not negotiated (the tap refused it)
  post(kTx, {{kBuf + 0x2000, kHdr + 100, false}});
  put_hdr(kBuf + 0x3000, 0, 7, 1448);  // no such GSO type
  put(kBuf + 0x3000 + kHdr, f);
  post(kTx, {{kBuf + 0x3000, kHdr + 100, false}});
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kTx) == 4; }));
  EXPECT_TRUE(host_recv(50).empty());
}

TEST_F(VirtioNet, HostileReceiveChainsComeBackEmptyAndTouchNothing) {
  make();
  std::memset(ram().at(kBuf), '.', 0x3000);
  post(kRx, {{kBuf, 1000, false}});                            // device-readable
  post(kRx, {{kBuf + 0x1000, 8, true}});                       // shorter than the header
  post(kRx, {{kBuf + 0x2000, 1000, true}, {kBuf, 8, false}});  // readable after writable
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kRx) == 3; }));
  for (uint16_t i = 0; i < 3; ++i) EXPECT_EQ(g().used_elem(kRx, i).second, 0u);
  host_send(frame(60, 1));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(get(kBuf, 0x3000), std::vector<uint8_t>(0x3000, '.'));
  post(kRx, {{kBuf, 1000, true}});  // a good buffer gets the frame that waited
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kRx) == 4; }));
  EXPECT_EQ(g().used_elem(kRx, 3).second, kHdr + 60);
}

TEST_F(VirtioNet, ResetWithBuffersAndAPacketParkedReturnsAtOnce) {
  make();
  post(kRx, {{kBuf, 100, true}});
  host_send(frame(1400, 1));  // held: 100 bytes are not enough
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  auto t0 = std::chrono::steady_clock::now();
  rig->reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(500));
  EXPECT_EQ(g().status(), 0);
  ASSERT_EQ(g().init(2, 64) & 0xf, 0xf);
  post(kRx, {{kBuf + 0x1000, 2000, true}});
  host_send(frame(70, 2));
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kRx) == 1; }));
  EXPECT_EQ(get(kBuf + 0x1000 + kHdr, 70), frame(70, 2));  // the held packet went with the reset
}

// The real thing: a tap made inside a network namespace of this test's own (a forked child, so
// the host's namespace never sees it). Checks the offload probe and the device's features.
TEST(VirtioNetTap, CreatedTapTakesOffloadsAndShowsUpAsAnInterface) {
  if (access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/net/tun is not available";
  int pfd[2];
  ASSERT_EQ(pipe(pfd), 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(pfd[0]);
    std::string out;
    if (unshare(CLONE_NEWNET) != 0) {
      out = std::string("SKIP cannot make a network namespace: ") + strerror(errno);
    } else {
      auto d = vn::NetDevice::create({});
      if (!d) {
        out = "ERR " + d.error().to_string();
      } else {
        out = img::strfmt("OK %s %llx %d", (*d)->tap_name().c_str(),
                          (unsigned long long)(*d)->device_features(),
                          if_nametoindex((*d)->tap_name().c_str()) > 0 ? 0 : 1);
      }
    }
    (void)!write(pfd[1], out.data(), out.size());
    _exit(0);
  }
  close(pfd[1]);
  char b[512];
  ssize_t n = read(pfd[0], b, sizeof b);
  close(pfd[0]);
  int st;
  waitpid(pid, &st, 0);
  std::string out(b, n > 0 ? static_cast<size_t>(n) : 0);
  if (out.starts_with("SKIP")) GTEST_SKIP() << out.substr(5);
  ASSERT_TRUE(out.starts_with("OK ")) << out;
  char name[64];
  unsigned long long f;
  int rc;
  ASSERT_EQ(sscanf(out.c_str(), "OK %63s %llx %d", name, &f, &rc), 3);
  EXPECT_TRUE(std::string(name).starts_with("tap")) << name;
  EXPECT_EQ(rc, 0) << "the tap is not an interface in its namespace";
  // Linux taps take checksum and TSO offloads.
  EXPECT_TRUE(f & bit(vn::kFCsum));
  EXPECT_TRUE(f & bit(vn::kFGuestCsum));
  EXPECT_TRUE(f & bit(vn::kFHostTso4));
  EXPECT_TRUE(f & bit(vn::kFGuestTso6));
}

TEST(VirtioNetTap, AMissingTapIsAClearError) {
  vn::NetOptions o;
  o.tap = {vn::TapSpec::Kind::kExisting, "vmmnosuchtap0", -1, 0};
  auto d = vn::NetDevice::create(o);
  ASSERT_FALSE(d);
  EXPECT_NE(d.error().message().find("tap vmmnosuchtap0 does not exist"), std::string::npos)
      << d.error().message();
}

}  // namespace
}  // namespace vmm::testing
