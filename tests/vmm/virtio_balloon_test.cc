// virtio-balloon (virtio/balloon/) through the PCI transport over fake guest memory, and
// GuestMemory::discard under it: inflated pages are given back (they read as zeros and leave the
// process's RSS), hostile PFN arrays (outside RAM, huge counts, odd lengths, wrong direction)
// discard nothing they should not, the configuration and the statistics queue.
#include <gtest/gtest.h>

#include <fstream>

#include "virtio/balloon/balloon_device.h"
#include "virtio_rig.h"

namespace vmm::testing {
namespace {

namespace vb = virtio::balloon;
using Buf = VirtioGuest::Buf;
constexpr uint64_t kPfnBuf = 0x1000000;  // the PFN arrays
constexpr uint64_t kPages = 0x2000000;   // the pages the guest gives up
constexpr unsigned kIn = vb::kInflateQueue, kDe = vb::kDeflateQueue, kSt = vb::kStatsQueue;

TEST(GuestMemoryDiscard, DropsOnlyAlignedRangesInsideRam) {
  GuestRam ram(4 << 20);
  std::memset(ram.at(0x1000), 0xab, 0x3000);
  EXPECT_TRUE(ram.mem().discard(0x2000, 0x1000));
  EXPECT_EQ(ram.get<uint8_t>(0x2000), 0);
  EXPECT_EQ(ram.get<uint8_t>(0x2fff), 0);
  EXPECT_EQ(ram.get<uint8_t>(0x1fff), 0xab);  // neighbours untouched
  EXPECT_EQ(ram.get<uint8_t>(0x3000), 0xab);
  EXPECT_FALSE(ram.mem().discard(0x1001, 0x1000));               // unaligned start
  EXPECT_FALSE(ram.mem().discard(0x1000, 0x800));                // unaligned length
  EXPECT_FALSE(ram.mem().discard(ram.size() - 0x1000, 0x2000));  // runs past RAM
  EXPECT_FALSE(ram.mem().discard(~0ull & ~0xfffull, 0x1000));    // wraps
  EXPECT_FALSE(ram.mem().discard(0x1000, 0));
  EXPECT_EQ(ram.get<uint8_t>(0x1000), 0xab);
}

uint64_t rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string k;
  while (f >> k) {
    uint64_t v;
    if (k == "VmRSS:" && f >> v) return v;
  }
  return 0;
}

TEST(GuestMemoryDiscard, DropsOnlyWholeHostPagesOfAHugePageRegion) {
  constexpr uint64_t k2M = 2 << 20;
  GuestRam ram(8 << 20, k2M);
  EXPECT_EQ(ram.mem().host_page_size(0x1000), k2M);
  EXPECT_EQ(ram.mem().host_page_size(8 << 20), 0u);  // not RAM
  std::memset(ram.at(0), 0xcd, 8 << 20);
  EXPECT_FALSE(ram.mem().discard(k2M, 0x1000));        // a 4 KiB page of a huge page
  EXPECT_FALSE(ram.mem().discard(k2M + 0x1000, k2M));  // not on a huge page boundary
  EXPECT_FALSE(ram.mem().discard(k2M, k2M + 0x1000));  // not whole huge pages
  EXPECT_EQ(ram.get<uint8_t>(k2M), 0xcd);
  EXPECT_TRUE(ram.mem().discard(k2M, k2M));
  EXPECT_EQ(ram.get<uint8_t>(k2M), 0);
  EXPECT_EQ(ram.get<uint8_t>(2 * k2M - 1), 0);
  EXPECT_EQ(ram.get<uint8_t>(k2M - 1), 0xcd);
  EXPECT_EQ(ram.get<uint8_t>(2 * k2M), 0xcd);
}

struct VirtioBalloon : ::testing::Test {
  std::unique_ptr<DeviceRig> rig;
  vb::BalloonDevice* dev = nullptr;
  void make(vb::BalloonOptions o = {}, uint64_t host_page_size = 0) {
    auto d = vb::BalloonDevice::create(o);
    ASSERT_TRUE(d) << d.error().to_string();
    dev = d->get();
    rig = std::make_unique<DeviceRig>(as_device(std::move(d)), 128 << 20, host_page_size);
    ASSERT_TRUE(rig->ok()) << rig->error;
    ASSERT_EQ(rig->guest.init(3, 64) & 0xf, 0xf);
  }
  VirtioGuest& g() { return rig->guest; }
  GuestRam& ram() { return rig->ram; }
  uint64_t cfg() { return g().bar() + virtio::VirtioPciDevice::kDeviceCfgOffset; }
  // Writes pfns at `at` and posts them on q as one chain; waits for it.
  uint32_t send_pfns(unsigned q, uint64_t at, const std::vector<uint32_t>& pfns,
                     bool writable = false) {
    std::memcpy(ram().at(at), pfns.data(), pfns.size() * 4);
    uint16_t before = g().used_idx(q);
    uint16_t head = g().write_chain(q, {{at, static_cast<uint32_t>(pfns.size() * 4), writable}});
    g().make_available(q, head);
    g().notify(q);
    EXPECT_TRUE(wait_for([&] { return g().used_idx(q) != before; }));
    return g().used_elem(q, before).second;
  }
};

TEST_F(VirtioBalloon, IsABalloonAskingForTheConfiguredPages) {
  make({.num_pages = 1234});
  EXPECT_EQ(rig->drv.cfg_read(0, 4), 0x10451af4u);  // device 0x1040 + 5
  EXPECT_TRUE(g().features() & virtio::feature(vb::kFStatsVq));
  EXPECT_TRUE(g().features() & virtio::feature(vb::kFDeflateOnOom));
  EXPECT_EQ(rig->drv.mmio_read(cfg() + vb::cfg::kNumPages, 4), 1234u);
  rig->drv.mmio_write(cfg() + vb::cfg::kNumPages, 7, 4);  // the driver may not change it
  EXPECT_EQ(rig->drv.mmio_read(cfg() + vb::cfg::kNumPages, 4), 1234u);
  rig->drv.mmio_write(cfg() + vb::cfg::kActual, 1000, 4);
  EXPECT_EQ(rig->drv.mmio_read(cfg() + vb::cfg::kActual, 4), 1000u);
  dev->set_num_pages(99);
  EXPECT_EQ(rig->drv.mmio_read(cfg() + vb::cfg::kNumPages, 4), 99u);
}

TEST_F(VirtioBalloon, InflatedPagesGoBackToTheHost) {
  make();
  constexpr uint32_t kN = 4096;  // 16 MiB
  std::memset(ram().at(kPages), 0x77, (kN + 1) * 4096ull);
  uint64_t rss0 = rss_kib();
  uint32_t base = kPages / 4096;
  for (uint32_t c = 0; c < kN; c += 256) {  // as Linux sends them: 256 a chain
    std::vector<uint32_t> pfns(256);
    for (uint32_t i = 0; i < 256; ++i) pfns[i] = base + c + i;
    EXPECT_EQ(send_pfns(kIn, kPfnBuf + c * 4, pfns), 0u);
  }
  EXPECT_EQ(dev->discarded_pages(), kN);
  uint64_t rss1 = rss_kib();
  EXPECT_GT(rss0, rss1 + 12 * 1024) << "RSS " << rss0 << " KiB -> " << rss1 << " KiB";
  EXPECT_EQ(ram().get<uint8_t>(kPages), 0);
  EXPECT_EQ(ram().get<uint8_t>(kPages + kN * 4096ull - 1), 0);
  EXPECT_EQ(ram().get<uint8_t>(kPages + kN * 4096ull), 0x77);  // the page after: kept
  // Deflate: nothing to do on the host; the chain completes.
  EXPECT_EQ(send_pfns(kDe, kPfnBuf, {base, base + 1}), 0u);
  EXPECT_EQ(dev->discarded_pages(), kN);
}

TEST_F(VirtioBalloon, HostilePfnArraysDiscardNothingOutsideRam) {
  make();
  std::memset(ram().at(kPages), 0x55, 3 * 4096);
  uint32_t base = kPages / 4096;
  uint32_t past_ram = static_cast<uint32_t>(ram().size() / 4096);
  // Outside RAM, the last u32, and a run that starts inside and runs past the end: the pages
  // inside go, the others are skipped and counted.
  EXPECT_EQ(send_pfns(kIn, kPfnBuf, {past_ram, 0xffffffffu, past_ram - 1, past_ram}), 0u);
  EXPECT_EQ(dev->discarded_pages(), 1u);
  EXPECT_EQ(dev->bad_pfns(), 3u);
  // Refused whole (nothing discarded): a writable descriptor, an odd length, too many PFNs.
  EXPECT_EQ(send_pfns(kIn, kPfnBuf, {base}, /*writable=*/true), 0u);
  ram().put<uint32_t>(kPfnBuf, base + 1);
  uint16_t before = g().used_idx(kIn);
  g().make_available(kIn, g().write_chain(kIn, {{kPfnBuf, 6, false}}));
  g().notify(kIn);
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kIn) == before + 1; }));
  std::vector<uint32_t> many(vb::kMaxPfnsPerChain + 1, base + 2);
  EXPECT_EQ(send_pfns(kIn, kPfnBuf, many), 0u);
  EXPECT_EQ(dev->discarded_pages(), 1u);
  for (int p = 0; p < 3; ++p) EXPECT_EQ(ram().get<uint8_t>(kPages + p * 4096ull), 0x55) << p;
  EXPECT_EQ(rig->virtio().device_status() & virtio::kStatusNeedsReset, 0);
  EXPECT_EQ(send_pfns(kIn, kPfnBuf, {base}), 0u);  // still serving
  EXPECT_EQ(ram().get<uint8_t>(kPages), 0);
}

// On huge pages the balloon gathers 4 KiB PFNs until a whole 2 MiB page is in it, in any order
// and across chains, then gives that page back; a deflated page makes it partial again.
TEST_F(VirtioBalloon, AHugePageGoesBackOnceAllOfItIsInTheBalloon) {
  constexpr uint64_t k2M = 2 << 20;
  constexpr uint32_t kPer = k2M / 4096;  // 512
  make({}, k2M);
  const uint64_t huge = 8 * k2M;  // the huge page under test, at 16 MiB
  std::memset(ram().at(huge), 0x77, 2 * k2M);
  const uint32_t base = huge / 4096;
  // All but one of its pages, backwards, in two chains, one PFN twice: nothing goes back yet.
  std::vector<uint32_t> a, b;
  for (uint32_t i = kPer - 1; i >= 1; --i) (i >= kPer / 2 ? a : b).push_back(base + i);
  b.push_back(base + 7);
  EXPECT_EQ(send_pfns(kIn, kPfnBuf, a), 0u);
  EXPECT_EQ(send_pfns(kIn, kPfnBuf, b), 0u);
  EXPECT_EQ(dev->discarded_pages(), 0u);
  EXPECT_EQ(dev->partial_host_pages(), 1u);
  EXPECT_EQ(ram().get<uint8_t>(huge + 4096), 0x77);
  // The last one, with one page of the next huge page: the first goes back whole, the second is
  // now partial.
  EXPECT_EQ(send_pfns(kIn, kPfnBuf, {base, base + kPer}), 0u);
  EXPECT_EQ(dev->discarded_pages(), kPer);
  EXPECT_EQ(dev->partial_host_pages(), 1u);
  EXPECT_EQ(ram().get<uint8_t>(huge), 0);
  EXPECT_EQ(ram().get<uint8_t>(huge + k2M - 1), 0);
  EXPECT_EQ(ram().get<uint8_t>(huge + k2M), 0x77);  // only one of its pages is in the balloon
  // The guest takes one page back and touches it; inflating that page again completes the huge
  // page again, and the host takes it back again.
  EXPECT_EQ(send_pfns(kDe, kPfnBuf, {base + 3}), 0u);
  EXPECT_EQ(dev->partial_host_pages(), 2u);
  ram().put<uint8_t>(huge + 3 * 4096, 0x11);
  EXPECT_EQ(send_pfns(kIn, kPfnBuf, {base + 3}), 0u);
  EXPECT_EQ(dev->discarded_pages(), 2 * kPer);
  EXPECT_EQ(ram().get<uint8_t>(huge + 3 * 4096), 0);
  EXPECT_EQ(dev->partial_host_pages(), 1u);
  // Deflating what the balloon never held changes nothing; a reset forgets the balloon.
  EXPECT_EQ(send_pfns(kDe, kPfnBuf, {base + 2 * kPer + 5}), 0u);
  EXPECT_EQ(dev->partial_host_pages(), 1u);
  rig->reset();
  EXPECT_EQ(dev->partial_host_pages(), 0u);
}

TEST_F(VirtioBalloon, StatisticsAreRecordedAndAskedForAgain) {
  make({.stats_interval = std::chrono::milliseconds(50)});
  // Two entries: VIRTIO_BALLOON_S_MEMFREE (4) = 123 MiB, S_MEMTOT (5) = 512 MiB.
  uint8_t e[20];
  uint16_t t0 = 4, t1 = 5;
  uint64_t v0 = 123ull << 20, v1 = 512ull << 20;
  std::memcpy(e, &t0, 2);
  std::memcpy(e + 2, &v0, 8);
  std::memcpy(e + 10, &t1, 2);
  std::memcpy(e + 12, &v1, 8);
  std::memcpy(ram().at(kPfnBuf), e, sizeof e);
  g().make_available(kSt, g().write_chain(kSt, {{kPfnBuf, sizeof e, false}}));
  g().notify(kSt);
  ASSERT_TRUE(wait_for([&] { return dev->stats().size() == 2; }));
  EXPECT_EQ(dev->stats().at(4), v0);
  EXPECT_EQ(dev->stats().at(5), v1);
  // The buffer comes back after the interval: the device asks for fresh numbers (§5.5.6.3).
  ASSERT_TRUE(wait_for([&] { return g().used_idx(kSt) == 1; }));
}

}  // namespace
}  // namespace vmm::testing
