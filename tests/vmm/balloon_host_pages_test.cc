// HostPages: the balloon's count of ballooned 4 KiB pages per huge page. A huge page is complete
// exactly when all of its pages are in, whatever the order and however often one is repeated;
// deflate undoes one page; partial() counts the huge pages started but not complete.
#include "virtio/balloon/host_pages.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace vmm::virtio::balloon {
namespace {

constexpr uint64_t k2M = 2 << 20, k4K = 4096;

TEST(BalloonHostPages, CompleteOnlyWhenEveryPageIsIn) {
  HostPages h;
  for (uint64_t i = 0; i + 1 < k2M / k4K; ++i) {
    EXPECT_FALSE(h.inflate(k2M + i * k4K, k2M)) << i;
    EXPECT_FALSE(h.inflate(k2M + i * k4K, k2M)) << "twice: " << i;
  }
  EXPECT_EQ(h.partial(), 1u);
  EXPECT_TRUE(h.inflate(2 * k2M - k4K, k2M));
  EXPECT_EQ(h.partial(), 0u);
  EXPECT_FALSE(h.inflate(2 * k2M - k4K, k2M));  // already complete: not given back twice
}

TEST(BalloonHostPages, DeflateMakesAPagePartialAndReinflateCompletesIt) {
  HostPages h;
  for (uint64_t i = 0; i < k2M / k4K; ++i) h.inflate(i * k4K, k2M);
  h.deflate(5 * k4K, k2M);
  h.deflate(5 * k4K, k2M);    // twice: counted once
  h.deflate(k2M + k4K, k2M);  // a page never in the balloon
  EXPECT_EQ(h.partial(), 1u);
  EXPECT_TRUE(h.inflate(5 * k4K, k2M));
  for (uint64_t i = 0; i < k2M / k4K; ++i) h.deflate(i * k4K, k2M);
  EXPECT_EQ(h.partial(), 0u);
  EXPECT_FALSE(h.inflate(0, k2M));  // an emptied page starts over
  EXPECT_EQ(h.partial(), 1u);
  h.clear();
  EXPECT_EQ(h.partial(), 0u);
}

// Against a model: random inflates and deflates over a few huge pages (and a 1 GiB page size),
// the completions and the partial count are what a plain set of pages says.
TEST(BalloonHostPages, MatchesASetOfPagesUnderRandomTraffic) {
  for (uint64_t host_page : {k2M, uint64_t{1} << 30}) {
    HostPages h;
    std::mt19937_64 rng(host_page);
    const uint64_t per = host_page / k4K;
    std::vector<std::vector<bool>> in(3, std::vector<bool>(per));
    std::vector<uint64_t> count(3);
    for (int step = 0; step < 200000; ++step) {
      uint64_t hp = rng() % 3;
      // Mostly inflates of a narrow window, so pages do complete.
      uint64_t i = per - 1 - rng() % std::min<uint64_t>(per, 600);
      uint64_t gpa = hp * host_page + i * k4K + host_page * 8;  // not at 0
      if (rng() % 4) {
        bool done = h.inflate(gpa, host_page);
        bool was = in[hp][i];
        in[hp][i] = true;
        count[hp] += !was;
        ASSERT_EQ(done, !was && count[hp] == per) << step;
      } else {
        h.deflate(gpa, host_page);
        count[hp] -= in[hp][i];
        in[hp][i] = false;
      }
      uint64_t partial = 0;
      for (uint64_t c : count) partial += c > 0 && c < per;
      ASSERT_EQ(h.partial(), partial) << step;
    }
  }
}

}  // namespace
}  // namespace vmm::virtio::balloon
