// virtio-rng (virtio/rng/) through the PCI transport over fake guest memory: the guest sees an
// entropy device, gets random bytes in the buffers it posts (capped per request), hostile chains
// come back empty without touching memory, the rate limit holds, and a reset with chains waiting
// for tokens returns at once and leaves them alone.
#include <gtest/gtest.h>

#include <set>

#include "virtio/rng/rng_device.h"
#include "virtio_rig.h"

namespace vmm::testing {
namespace {

namespace vr = virtio::rng;
using Buf = VirtioGuest::Buf;
constexpr uint64_t kBuf = 0x1000000;

struct VirtioRng : ::testing::Test {
  std::unique_ptr<DeviceRig> rig;
  void make(vr::RngOptions o = {}) {
    rig = std::make_unique<DeviceRig>(as_device(vr::RngDevice::create(o)));
    ASSERT_TRUE(rig->ok()) << rig->error;
    ASSERT_EQ(rig->guest.init(1, 16) & 0xf, 0xf);
  }
  VirtioGuest& g() { return rig->guest; }
  GuestRam& ram() { return rig->ram; }
  void fill(uint64_t at, size_t n, uint8_t v) { std::memset(ram().at(at), v, n); }
  // Posts a chain and waits for it; returns the used length.
  uint32_t request(const std::vector<Buf>& bufs) {
    uint16_t before = g().used_idx(0);
    uint16_t head = g().write_chain(0, bufs);
    g().make_available(0, head);
    g().notify(0);
    EXPECT_TRUE(wait_for([&] { return g().used_idx(0) != before; }));
    auto [id, len] = g().used_elem(0, before);
    EXPECT_EQ(id, head);
    return len;
  }
  bool all(uint64_t at, size_t n, uint8_t v) {
    for (size_t i = 0; i < n; ++i)
      if (ram().get<uint8_t>(at + i) != v) return false;
    return true;
  }
};

TEST_F(VirtioRng, IsAnEntropyDeviceOnPci) {
  make();
  EXPECT_EQ(rig->drv.cfg_read(0, 4), 0x10441af4u);     // vendor 0x1af4, device 0x1040 + 4
  EXPECT_EQ(rig->drv.cfg_read(8, 4) >> 8, 0xff0000u);  // class from the transport's table
  EXPECT_EQ(g().features(), virtio::feature(virtio::kFVersion1) |
                                virtio::feature(virtio::kFRingIndirectDesc) |
                                virtio::feature(virtio::kFRingEventIdx));
}

TEST_F(VirtioRng, FillsEveryWritableBufferWithRandomBytes) {
  make();
  fill(kBuf, 8192, 0);
  EXPECT_EQ(request({{kBuf, 1000, true}, {kBuf + 4096, 3000, true}}), 4000u);
  // Random: not constant, and a second request differs from the first.
  std::set<uint8_t> distinct(ram().at(kBuf), ram().at(kBuf) + 1000);
  EXPECT_GT(distinct.size(), 100u);
  EXPECT_FALSE(all(kBuf + 4096, 3000, 0));
  EXPECT_TRUE(all(kBuf + 1000, 4096 - 1000, 0)) << "wrote past the first descriptor";
  EXPECT_TRUE(all(kBuf + 4096 + 3000, 8192 - 7096, 0)) << "wrote past the second descriptor";
  std::vector<uint8_t> first(ram().at(kBuf), ram().at(kBuf) + 1000);
  EXPECT_EQ(request({{kBuf, 1000, true}}), 1000u);
  EXPECT_NE(std::memcmp(first.data(), ram().at(kBuf), 1000), 0);
}

TEST_F(VirtioRng, EachRequestIsCapped) {
  make({.max_request = 1024});
  fill(kBuf, 8192, 0xcc);
  EXPECT_EQ(request({{kBuf, 600, true}, {kBuf + 4096, 4096, true}}), 1024u);
  EXPECT_FALSE(all(kBuf, 600, 0xcc));
  EXPECT_TRUE(all(kBuf + 4096 + 424, 4096 - 424, 0xcc)) << "wrote beyond the cap";
}

TEST_F(VirtioRng, HostileChainsComeBackEmptyAndTouchNothing) {
  make();
  fill(kBuf, 8192, 0xcc);
  // Device-readable buffer (§5.4.6.1: the driver MUST NOT).
  EXPECT_EQ(request({{kBuf, 512, false}}), 0u);
  // Readable then writable: the whole chain is refused, its writable part untouched too.
  EXPECT_EQ(request({{kBuf, 512, false}, {kBuf + 512, 512, true}}), 0u);
  // Zero-length only.
  EXPECT_EQ(request({{kBuf, 0, true}}), 0u);
  // Outside guest memory, and a length that runs off its end.
  EXPECT_EQ(request({{ram().size() + 4096, 64, true}}), 0u);
  EXPECT_EQ(request({{kBuf, 0xfffff000u, true}}), 0u);
  EXPECT_TRUE(all(kBuf, 8192, 0xcc));
  EXPECT_EQ(rig->virtio().device_status() & virtio::kStatusNeedsReset, 0);
  // Still serving.
  EXPECT_EQ(request({{kBuf, 64, true}}), 64u);
}

TEST_F(VirtioRng, RateLimitHoldsAndResetDropsWaitingChains) {
  // 16 KiB/s with a 16 KiB burst: 32 KiB take at least the second 16 KiB's full second.
  make({.rate = 16 << 10, .max_request = 4096});
  auto t0 = std::chrono::steady_clock::now();
  uint16_t heads[8];
  for (unsigned i = 0; i < 8; ++i) {
    heads[i] = g().write_chain(0, {{kBuf + i * 4096ull, 4096, true}});
    g().make_available(0, heads[i]);
  }
  g().notify(0);
  ASSERT_TRUE(wait_for([&] { return g().used_idx(0) >= 4; }));
  auto burst_done = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(burst_done, std::chrono::milliseconds(500)) << "the burst should pass at once";
  ASSERT_TRUE(wait_for([&] { return g().used_idx(0) == 8; }));
  auto all_done = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(all_done, std::chrono::milliseconds(900));
  for (uint16_t i = 0; i < 8; ++i) {
    EXPECT_EQ(g().used_elem(0, i).first, heads[i]) << "served in order";
    EXPECT_EQ(g().used_elem(0, i).second, 4096u);
  }
  // The bucket is empty now: these wait. A reset must not wait for them, nor complete them.
  fill(kBuf + 0x100000, 4 * 4096, 0xcc);
  for (unsigned i = 0; i < 4; ++i) {
    g().make_available(0, g().write_chain(0, {{kBuf + 0x100000 + i * 4096ull, 4096, true}}));
  }
  g().notify(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto t1 = std::chrono::steady_clock::now();
  rig->reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t1, std::chrono::milliseconds(500));
  EXPECT_EQ(rig->guest.status(), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_TRUE(all(kBuf + 0x100000 + 4096, 3 * 4096, 0xcc)) << "written after reset";
  // A reset does not refill the bucket (a guest cannot reset its way past the limit): with a
  // fresh 16 KiB burst these four would all complete at once.
  ASSERT_EQ(rig->guest.init(1, 16) & 0xf, 0xf);
  for (unsigned i = 0; i < 4; ++i) {
    g().make_available(0, g().write_chain(0, {{kBuf + i * 4096ull, 4096, true}}));
  }
  g().notify(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_LT(g().used_idx(0), 4);
  ASSERT_TRUE(wait_for([&] { return g().used_idx(0) == 4; }));
}

}  // namespace
}  // namespace vmm::testing
