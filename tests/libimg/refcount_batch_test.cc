// RefcountBatch and L2Stream (qcow2/refcount_batch.h) on their own: the whole-image passes of
// internal snapshots stand on them. Runs of refcount changes across block boundaries at every
// refcount width, all or nothing; the L2 stream's two buffers, written back while the next
// batch is read, with injected read and write failures.
#include "qcow2/refcount_batch.h"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "img/bytes.h"
#include "img/mem_file.h"
#include "qcow2/format.h"
#include "test_util.h"
#include "util/async.h"

namespace img::qcow2 {
namespace {

using test::make_loop;

constexpr uint32_t kBits = 9;  // 512-byte clusters: small blocks, many boundaries
constexpr uint64_t kCs = 1u << kBits;

// A file whose refcount table names `blocks` refcount blocks at clusters 1.., each entry set to
// value(cluster) (truncated to the width).
struct RefFile {
  RefFile(IoLoop& loop, uint32_t order, uint64_t blocks, uint64_t (*value)(uint64_t))
      : f(&loop), per_block(refcount_block_entries(kBits, order)) {
    f.bytes().assign((blocks + 1) * kCs, 0);
    for (uint64_t b = 0; b < blocks; ++b) {
      reftable.push_back((b + 1) * kCs);
      for (uint64_t i = 0; i < per_block; ++i) {
        set_refcount(&f.bytes()[(b + 1) * kCs], i, order,
                     value(b * per_block + i) & max_refcount(order));
      }
    }
  }
  uint64_t on_disk(uint32_t order, uint64_t c) const {
    return get_refcount(&f.bytes()[reftable[c / per_block]], c % per_block, order);
  }
  FaultFile f;
  uint64_t per_block;
  std::vector<uint64_t> reftable;
};

uint64_t two(uint64_t) { return 2; }
uint64_t ramp(uint64_t c) { return 1 + c % 3; }

TEST(RefcountBatch, RunsAcrossBlockBoundariesAtEveryWidth) {
  for (uint32_t order = 0; order <= 6; ++order) {
    SCOPED_TRACE("refcount_order " + std::to_string(order));
    auto loop = make_loop();
    RefFile rf(*loop, order, 3, order == 0 ? [](uint64_t) -> uint64_t { return 0; } : ramp);
    const uint64_t n = 3 * rf.per_block;
    RefcountBatch rb(rf.f, rf.reftable, kBits, order);
    std::vector<uint64_t> all(n);
    std::iota(all.begin(), all.end(), 0);
    ASSERT_OK(loop->run(rb.load(all)));
    // From the middle of block 0 to the middle of block 2.
    const uint64_t first = rf.per_block / 2, count = 2 * rf.per_block;
    const int64_t d = order == 0 ? 1 : -1;
    ASSERT_OK(rb.add_run(first, count, d));
    for (uint64_t c = 0; c < n; ++c) {
      const uint64_t was = order == 0 ? 0 : ramp(c) & max_refcount(order);
      const uint64_t want = c >= first && c < first + count ? was + d : was;
      ASSERT_EQ(rb.get(c), want) << "cluster " << c;
    }
    if (order > 0) {
      // ramp(c) == 1 at c % 3 == 0: the lowest of those inside the run reached zero.
      uint64_t lowest = first + (3 - first % 3) % 3;
      EXPECT_EQ(rb.lowest_freed(), lowest);
    }
    ASSERT_OK(loop->run(rb.write_dirty()));
    for (uint64_t c = 0; c < n; ++c) ASSERT_EQ(rf.on_disk(order, c), rb.get(c)) << c;
  }
}

TEST(RefcountBatch, AnUnderflowAnywhereInARunChangesNothing) {
  auto loop = make_loop();
  RefFile rf(*loop, 4, 2, two);
  RefcountBatch rb(rf.f, rf.reftable, kBits, 4);
  ASSERT_OK(loop->run(rb.load({0, rf.per_block})));
  const uint64_t last = 2 * rf.per_block - 1;
  ASSERT_OK(rb.add(last, -2));  // now 0: the run below ends on it
  auto s = rb.add_run(3, last - 2, -1);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), ErrorCode::kCorruption);
  EXPECT_NE(s.error().to_string().find("cluster " + std::to_string(last)), std::string::npos)
      << s.error().to_string();
  for (uint64_t c = 0; c < last; ++c) ASSERT_EQ(rb.get(c), 2u) << "cluster " << c;
}

TEST(RefcountBatch, AnOverflowIsRefusedWithTheWidthNamed) {
  auto loop = make_loop();
  RefFile rf(*loop, 1, 1, [](uint64_t c) -> uint64_t { return c == 40 ? 3 : 1; });
  RefcountBatch rb(rf.f, rf.reftable, kBits, 1);
  ASSERT_OK(loop->run(rb.load({0})));
  auto s = rb.add_run(10, 100, +1);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().to_string().find("refcount_bits=2"), std::string::npos)
      << s.error().to_string();
  for (uint64_t c = 0; c < rf.per_block; ++c) ASSERT_EQ(rb.get(c), c == 40 ? 3u : 1u) << c;
  // A delta wider than the whole range is an overflow too, not a wrap-around.
  EXPECT_FALSE(rb.add_run(0, 2, +7));
}

// An image of `tables` L2 tables at clusters 1.. whose bytes say which table they are.
struct L2File {
  L2File(IoLoop& loop, uint64_t tables) : f(&loop) {
    f.bytes().assign((tables + 1) * kCs, 0);
    for (uint64_t t = 0; t < tables; ++t) {
      for (uint64_t i = 0; i < kCs / 8; ++i) store_be64(&f.bytes()[(t + 1) * kCs + i * 8], t);
    }
  }
  FaultFile f;
};

TEST(L2Stream, BatchesComeInOffsetOrderWithDuplicatesCountedOnce) {
  auto loop = make_loop();
  const uint64_t tables = 20;
  L2File lf(*loop, tables);
  std::vector<uint64_t> l1;
  for (uint64_t t = tables; t-- > 0;) l1.push_back((t + 1) * kCs);
  l1.push_back(0);
  l1.push_back(5 * kCs);  // table 4 named twice
  auto st = L2Stream::make(lf.f, l1, kCs, lf.f.bytes().size(), 3 * kCs);
  ASSERT_TRUE(st.has_value());
  uint64_t seen = 0;
  for (;;) {
    auto more = loop->run(st->next());
    ASSERT_TRUE(more.has_value());
    if (!*more) break;
    for (size_t i = 0; i < st->size(); ++i, ++seen) {
      EXPECT_EQ(st->offset(i), (seen + 1) * kCs);
      EXPECT_EQ(st->refs(i), seen == 4 ? 2u : 1u);
      EXPECT_EQ(load_be64(st->table(i)), seen);
    }
  }
  EXPECT_EQ(seen, tables);
}

TEST(L2Stream, HostileL1EntriesAreRefusedBeforeAnyRead) {
  auto loop = make_loop();
  L2File lf(*loop, 2);
  const uint64_t size = lf.f.bytes().size();
  EXPECT_FALSE(L2Stream::make(lf.f, {kCs + 1}, kCs, size));             // unaligned
  EXPECT_FALSE(L2Stream::make(lf.f, {3 * kCs}, kCs, size));             // past the end
  EXPECT_FALSE(L2Stream::make(lf.f, {kCs | (1ull << 62)}, kCs, size));  // reserved bit
  EXPECT_EQ(lf.f.reads_seen(), 0u);
}

// The pattern of the COPIED pass: each batch's changes are written while the next batch is
// read and changed. Every table comes back changed exactly once, whatever the batch size.
Task<Status> change_all(L2Stream& st, IoLoop& loop) {
  bool more = true;
  auto read_and_change = [&]() -> Task<Status> {
    CO_ASSIGN_OR_RETURN(more, co_await st.next());
    if (!more) co_return Status{};
    for (size_t i = 0; i < st.size(); ++i) {
      uint8_t* p = st.table(i);
      store_be64(p, load_be64(p) + 1000);
      st.mark_changed(i);
    }
    co_return Status{};
  };
  CO_RETURN_IF_ERROR(co_await read_and_change());
  while (more)
    CO_RETURN_IF_ERROR(co_await both(loop, st.write_changed(st.slot()), read_and_change()));
  co_return co_await st.write_changed();
}

TEST(L2Stream, WritesOfOneBatchOverlapTheNextAndLoseNothing) {
  for (uint64_t batch : {1, 2, 3, 7, 64}) {
    SCOPED_TRACE("batch of " + std::to_string(batch) + " tables");
    auto loop = make_loop();
    const uint64_t tables = 23;
    L2File lf(*loop, tables);
    std::vector<uint64_t> l1;
    for (uint64_t t = 0; t < tables; ++t) l1.push_back((t + 1) * kCs);
    std::shuffle(l1.begin(), l1.end(), std::mt19937_64(batch));
    auto st = L2Stream::make(lf.f, l1, kCs, lf.f.bytes().size(), batch * kCs);
    ASSERT_TRUE(st.has_value());
    ASSERT_OK(loop->run(change_all(*st, *loop)));
    EXPECT_EQ(lf.f.writes_in_flight(), 0u);
    for (uint64_t t = 0; t < tables; ++t) {
      EXPECT_EQ(load_be64(&lf.f.bytes()[(t + 1) * kCs]), t + 1000) << "table " << t;
      EXPECT_EQ(load_be64(&lf.f.bytes()[(t + 1) * kCs + 8]), t) << "table " << t;
    }
  }
}

TEST(L2Stream, AFailedReadOrWriteStopsThePassWithNothingLeftInFlight) {
  for (int fail_write = 0; fail_write < 2; ++fail_write) {
    for (uint64_t nth = 0; nth < 6; ++nth) {
      SCOPED_TRACE((fail_write ? "write " : "read ") + std::to_string(nth));
      auto loop = make_loop();
      const uint64_t tables = 12;
      L2File lf(*loop, tables);
      std::vector<uint64_t> l1;
      for (uint64_t t = 0; t < tables; ++t) l1.push_back((t + 1) * kCs);
      auto st = L2Stream::make(lf.f, l1, kCs, lf.f.bytes().size(), 2 * kCs);
      ASSERT_TRUE(st.has_value());
      if (fail_write) {
        lf.f.fail_from_op(nth);
      } else {
        lf.f.fail_reads(nth);
      }
      auto s = loop->run(change_all(*st, *loop));
      ASSERT_FALSE(s);
      EXPECT_EQ(s.error().code(), ErrorCode::kIo) << s.error().to_string();
      EXPECT_EQ(lf.f.writes_in_flight(), 0u);
      EXPECT_EQ(loop->spawned_running(), 0u);
      // Whatever was written is a whole changed table; the rest is as it was.
      for (uint64_t t = 0; t < tables; ++t) {
        const uint64_t v = load_be64(&lf.f.bytes()[(t + 1) * kCs]);
        EXPECT_TRUE(v == t || v == t + 1000) << "table " << t << ": " << v;
      }
    }
  }
}

}  // namespace
}  // namespace img::qcow2
