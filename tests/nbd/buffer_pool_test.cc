// BufferPool (libimg/src/nbd/buffer_pool.h): alignment, reuse, the bounds on what it keeps, and
// many buffers out at once as a busy connection holds them.
#include "nbd/buffer_pool.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <utility>
#include <vector>

namespace img::nbd {
namespace {

TEST(NbdBufferPool, BuffersArePageAlignedAndAsLongAsAsked) {
  BufferPool pool(4, 1 << 20);
  for (size_t n : {1u, 511u, 4096u, 4097u, 262144u}) {
    Buffer b = pool.get(n);
    ASSERT_NE(b.data(), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % BufferPool::kAlign, 0u) << n;
    EXPECT_EQ(b.size(), n);
    EXPECT_GE(b.capacity(), n);
    EXPECT_EQ(b.capacity() % BufferPool::kAlign, 0u);
    std::memset(b.data(), 0xab, b.size());  // the whole size is usable (ASan checks it)
  }
  Buffer none = pool.get(0);
  EXPECT_EQ(none.data(), nullptr);
  EXPECT_EQ(none.size(), 0u);
}

TEST(NbdBufferPool, AReturnedBufferIsReusedForARequestItFits) {
  BufferPool pool(4, 1 << 20);
  uint8_t* first;
  {
    Buffer b = pool.get(65536);
    first = b.data();
  }
  EXPECT_EQ(pool.kept(), 1u);
  Buffer again = pool.get(4096);  // smaller: the kept 64 KiB buffer serves it
  EXPECT_EQ(again.data(), first);
  EXPECT_EQ(again.size(), 4096u);
  EXPECT_EQ(pool.kept(), 0u);
  EXPECT_EQ(pool.allocations(), 1u);
  Buffer bigger = pool.get(65537);  // nothing kept fits
  EXPECT_NE(bigger.data(), first);
  EXPECT_EQ(pool.allocations(), 2u);
}

TEST(NbdBufferPool, TheSmallestKeptBufferThatFitsIsTaken) {
  BufferPool pool(8, 8 << 20);
  uint8_t *small, *large;
  {
    Buffer a = pool.get(1 << 20);
    Buffer b = pool.get(8192);
    large = a.data();
    small = b.data();
  }
  Buffer c = pool.get(4096);
  EXPECT_EQ(c.data(), small);
  Buffer d = pool.get(4096);
  EXPECT_EQ(d.data(), large);
}

TEST(NbdBufferPool, KeepsNoMoreThanItsBounds) {
  BufferPool pool(3, 64 * 1024);
  {
    std::vector<Buffer> out;
    for (int i = 0; i < 10; ++i) out.push_back(pool.get(16384));
  }
  EXPECT_EQ(pool.kept(), 3u);  // the count bound
  EXPECT_EQ(pool.kept_bytes(), 3u * 16384);
  BufferPool bytes(100, 64 * 1024);
  {
    std::vector<Buffer> out;
    for (int i = 0; i < 10; ++i) out.push_back(bytes.get(16384));
  }
  EXPECT_EQ(bytes.kept(), 4u);  // the byte bound
  EXPECT_LE(bytes.kept_bytes(), 64u * 1024);
  {
    Buffer huge = bytes.get(1 << 20);  // bigger than the whole bound: freed, not kept
  }
  EXPECT_LE(bytes.kept_bytes(), 64u * 1024);
}

TEST(NbdBufferPool, MovesHandOverOwnership) {
  BufferPool pool(4, 1 << 20);
  Buffer a = pool.get(4096);
  uint8_t* p = a.data();
  Buffer b = std::move(a);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  EXPECT_EQ(b.data(), p);
  Buffer c = pool.get(8192);
  c = std::move(b);  // c's old buffer goes back to the pool
  EXPECT_EQ(c.data(), p);
  EXPECT_EQ(pool.kept(), 1u);
}

// Many buffers out at once and returned in random order, as replies finish out of order: each
// buffer's bytes stay its own (no two live buffers overlap), and the pool stays within bounds.
TEST(NbdBufferPool, ManyBuffersInFlightNeverShareMemory) {
  BufferPool pool(64, 16 << 20);
  std::mt19937 rng(7);
  std::vector<std::pair<Buffer, uint8_t>> live;
  for (int step = 0; step < 20000; ++step) {
    if (live.size() < 128 && (live.empty() || rng() % 2)) {
      size_t n = 1 + rng() % (256 * 1024);
      auto tag = static_cast<uint8_t>(step);
      Buffer b = pool.get(n);
      std::memset(b.data(), tag, n);
      live.emplace_back(std::move(b), tag);
    } else {
      size_t i = rng() % live.size();
      const auto& [b, tag] = live[i];
      for (size_t k = 0; k < b.size(); k += 509) ASSERT_EQ(b.data()[k], tag) << step;
      ASSERT_EQ(b.data()[b.size() - 1], tag);
      std::swap(live[i], live.back());
      live.pop_back();
    }
    ASSERT_LE(pool.kept(), 64u);
    ASSERT_LE(pool.kept_bytes(), 16u << 20);
  }
  EXPECT_LT(pool.allocations(), 20000u);  // reuse happened
}

}  // namespace
}  // namespace img::nbd
