// TableCache on its own: single-flight loads, eviction, write-back and dependency order, with
// injected read, write and flush failures and many coroutines contending on the same tables.
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "async_test_util.h"
#include "img/mem_file.h"
#include "qcow2/cache.h"
#include "test_util.h"

namespace img::qcow2 {
namespace {

using test::make_loop;
using test::run_until_quiet;

constexpr uint32_t kTable = 512;
constexpr int kTables = 16;

uint64_t off_of(int k) { return uint64_t(k + 1) * kTable; }  // table k; offset 0 is unused

// The file's content for table k: never zero, so a zero-filled table is never mistaken for it.
std::vector<uint8_t> pattern(int k) {
  std::vector<uint8_t> v(kTable);
  for (uint32_t i = 0; i < kTable; ++i) v[i] = static_cast<uint8_t>(0x80 | ((k * 13 + i) & 0x7f));
  return v;
}

std::vector<uint8_t> table_in(const FaultFile& f, uint64_t off) {
  return std::vector<uint8_t>(f.bytes().begin() + off, f.bytes().begin() + off + kTable);
}

std::vector<uint8_t> data_of(const TableCache::Ref& r) {
  return std::vector<uint8_t>(r.data(), r.data() + kTable);
}

struct Fixture {
  std::unique_ptr<IoLoop> loop = make_loop();
  FaultFile file{loop.get(), "tables"};
  Fixture() {
    file.bytes().assign(off_of(kTables), 0);
    for (int k = 0; k < kTables; ++k) {
      auto p = pattern(k);
      std::memcpy(file.bytes().data() + off_of(k), p.data(), kTable);
    }
  }
  TableCache cache(size_t capacity) { return TableCache(*loop, file, kTable, capacity, "table"); }
};

// What one coroutine's get() came back with.
struct Outcome {
  bool done = false;
  std::optional<std::vector<uint8_t>> data;  // empty: the get failed
};

// Regression: a waiter on a failed load was handed the zero-filled buffer (it held a pin, so the
// entry stayed cached with loading=false), and the failed entry served every later get.
TEST(TableCache, FailedLoadFailsEveryWaiterAndCachesNothing) {
  Fixture fx;
  auto cache = fx.cache(8);
  fx.file.fail_reads(0);
  std::vector<Outcome> out(24);
  auto getter = [&](Outcome* o) -> Task<void> {
    auto r = co_await cache.get(off_of(3));
    if (r) o->data = data_of(*r);
    o->done = true;
  };
  for (auto& o : out) fx.loop->spawn(getter(&o));
  run_until_quiet(*fx.loop);
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_TRUE(out[i].done) << i;
    EXPECT_FALSE(out[i].data.has_value()) << "waiter " << i << " got a table that was never read";
  }
  EXPECT_EQ(fx.file.reads_seen(), 1u) << "the waiters shared one read";
  EXPECT_EQ(cache.cached(), 0u) << "a failed load leaves nothing cached";
  // The next get retries the read, and sees the real table.
  auto r = fx.loop->run(cache.get(off_of(3)));
  ASSERT_OK(r);
  EXPECT_EQ(data_of(*r), pattern(3));
  EXPECT_EQ(fx.file.reads_seen(), 2u);
}

TEST(TableCache, ConcurrentMissesShareOneRead) {
  Fixture fx;
  auto cache = fx.cache(8);
  std::vector<Outcome> out(40);
  auto getter = [&](Outcome* o, int k) -> Task<void> {
    auto r = co_await cache.get(off_of(k));
    if (r) o->data = data_of(*r);
    co_await fx.loop->yield();  // hold the pin a little while others arrive
    o->done = true;
  };
  for (size_t i = 0; i < out.size(); ++i) fx.loop->spawn(getter(&out[i], int(i % 2)));
  run_until_quiet(*fx.loop);
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_TRUE(out[i].done);
    ASSERT_TRUE(out[i].data.has_value());
    EXPECT_EQ(*out[i].data, pattern(int(i % 2)));
  }
  EXPECT_EQ(fx.file.reads_seen(), 2u);
}

// get_new of an offset whose (stale) load is in flight waits for it, then replaces it with a
// zeroed table; the read completing later must not overwrite the new table.
TEST(TableCache, GetNewWaitsForAnInFlightLoad) {
  for (bool read_fails : {false, true}) {
    SCOPED_TRACE(read_fails ? "read fails" : "read succeeds");
    Fixture fx;
    auto cache = fx.cache(8);
    fx.file.hold_io(true);
    if (read_fails) fx.file.fail_reads(0);
    Outcome loader, fresh;
    auto getter = [&]() -> Task<void> {
      auto r = co_await cache.get(off_of(5));
      if (r) loader.data = data_of(*r);
      loader.done = true;
    };
    auto newer = [&]() -> Task<void> {
      auto r = co_await cache.get_new(off_of(5));
      if (r) fresh.data = data_of(*r);
      fresh.done = true;
    };
    fx.loop->spawn(getter());
    fx.loop->spawn(newer());
    run_until_quiet(*fx.loop);
    ASSERT_EQ(fx.file.held(), 1u);
    fx.file.hold_io(false);
    fx.file.release_all_held();
    run_until_quiet(*fx.loop);
    ASSERT_TRUE(loader.done && fresh.done);
    EXPECT_EQ(loader.data.has_value(), !read_fails);
    if (loader.data) {
      EXPECT_EQ(*loader.data, pattern(5));
    }
    ASSERT_TRUE(fresh.data.has_value());
    EXPECT_EQ(*fresh.data, std::vector<uint8_t>(kTable, 0));
    auto r = fx.loop->run(cache.get(off_of(5)));
    ASSERT_OK(r);
    EXPECT_EQ(data_of(*r), std::vector<uint8_t>(kTable, 0)) << "the new table is what is cached";
    r->reset();
    EXPECT_TRUE(cache.has_dirty());
    ASSERT_OK(fx.loop->run(cache.flush()));
    EXPECT_EQ(table_in(fx.file, off_of(5)), std::vector<uint8_t>(kTable, 0));
  }
}

// Regression: get_new kept a raw pointer to an entry across its wait for the entry's load, with
// no pin, so the entry could be evicted (and freed) before get_new used it.
TEST(TableCache, GetNewKeepsItsEntryAcrossTheWait) {
  Fixture fx;
  auto cache = fx.cache(2);
  auto other = fx.loop->run(cache.get(off_of(0)));  // pinned: the cache is then full
  ASSERT_OK(other);
  fx.file.hold_io(true);
  bool loader_done = false;
  Outcome fresh;
  auto loader = [&]() -> Task<void> {
    { auto r = co_await cache.get(off_of(1)); }  // unpinned at once, as a reader would
    // Needs room: table 1 is the only unpinned table, so it is the victim unless pinned.
    auto r2 = co_await cache.get(off_of(2));
    loader_done = true;
  };
  auto newer = [&]() -> Task<void> {
    auto r = co_await cache.get_new(off_of(1));
    if (r) fresh.data = data_of(*r);
    fresh.done = true;
  };
  fx.loop->spawn(loader());
  fx.loop->spawn(newer());
  run_until_quiet(*fx.loop);
  fx.file.hold_io(false);
  fx.file.release_all_held();
  run_until_quiet(*fx.loop);
  ASSERT_TRUE(loader_done && fresh.done);
  ASSERT_TRUE(fresh.data.has_value());
  auto r = fx.loop->run(cache.get(off_of(1)));
  ASSERT_OK(r);
  EXPECT_EQ(data_of(*r), std::vector<uint8_t>(kTable, 0)) << "the new table was lost";
}

// Dirties table k in the cache with content `fill` and unpins it.
void dirty_table(Fixture& fx, TableCache& cache, int k, uint8_t fill) {
  auto r = fx.loop->run(cache.get(off_of(k)));
  ASSERT_OK(r);
  std::memset(r->data(), fill, kTable);
  cache.mark_dirty(*r);
}

TEST(TableCache, FailedEvictionWriteKeepsTheTableDirty) {
  Fixture fx;
  auto cache = fx.cache(2);
  dirty_table(fx, cache, 0, 0xa0);
  dirty_table(fx, cache, 1, 0xa1);
  fx.file.fail_from_op(0);
  auto r = fx.loop->run(cache.get(off_of(2)));
  EXPECT_FALSE(r.has_value()) << "the victim could not be written";
  EXPECT_TRUE(cache.has_dirty());
  EXPECT_EQ(table_in(fx.file, off_of(0)), pattern(0));
  fx.file.recover();
  // The retry evicts after writing the victim, and nothing dirty was lost.
  r = fx.loop->run(cache.get(off_of(2)));
  ASSERT_OK(r);
  EXPECT_EQ(data_of(*r), pattern(2));
  r->reset();
  ASSERT_OK(fx.loop->run(cache.flush()));
  EXPECT_FALSE(cache.has_dirty());
  EXPECT_EQ(table_in(fx.file, off_of(0)), std::vector<uint8_t>(kTable, 0xa0));
  EXPECT_EQ(table_in(fx.file, off_of(1)), std::vector<uint8_t>(kTable, 0xa1));
}

TEST(TableCache, FailedFlushWriteIsRetriedByTheNextFlush) {
  for (uint64_t fail_at : {0, 1, 2}) {
    SCOPED_TRACE(fail_at);
    Fixture fx;
    auto cache = fx.cache(8);
    for (int k = 0; k < 3; ++k) dirty_table(fx, cache, k, uint8_t(0xb0 + k));
    fx.file.fail_from_op(fail_at);
    EXPECT_FALSE(fx.loop->run(cache.flush()).has_value());
    EXPECT_TRUE(cache.has_dirty());
    uint64_t written = cache.written_count();
    EXPECT_EQ(written, fail_at);
    fx.file.recover();
    ASSERT_OK(fx.loop->run(cache.flush()));
    EXPECT_FALSE(cache.has_dirty());
    EXPECT_EQ(cache.written_count(), 3u);
    for (int k = 0; k < 3; ++k) {
      EXPECT_EQ(table_in(fx.file, off_of(k)), std::vector<uint8_t>(kTable, uint8_t(0xb0 + k)));
    }
  }
}

// The L2 cache depends on the refcount cache: a failed flush of the file between them must keep
// the L2 table dirty and unwritten, and the retry must still flush before writing it.
TEST(TableCache, FailedDependencyFlushKeepsTheOrder) {
  Fixture fx;
  auto refcounts = fx.cache(8);
  auto l2 = fx.cache(8);
  dirty_table(fx, refcounts, 0, 0xc0);
  dirty_table(fx, l2, 1, 0xc1);
  ASSERT_OK(fx.loop->run(l2.set_dependency(&refcounts)));
  std::vector<std::string> log;
  fx.file.on_write = [&](uint64_t off, uint64_t) {
    log.push_back(std::to_string(off / kTable - 1) + "@" + std::to_string(fx.file.flushes_done()));
  };
  fx.file.fail_flushes(0);
  EXPECT_FALSE(fx.loop->run(l2.flush()).has_value());
  EXPECT_TRUE(l2.has_dirty());
  EXPECT_EQ(log, (std::vector<std::string>{"0@0"})) << "the L2 table waits for the flush";
  ASSERT_OK(fx.loop->run(l2.flush()));
  EXPECT_EQ(log, (std::vector<std::string>{"0@0", "1@1"}));
  EXPECT_FALSE(l2.has_dirty() || refcounts.has_dirty());
  EXPECT_EQ(table_in(fx.file, off_of(1)), std::vector<uint8_t>(kTable, 0xc1));
}

// Regression: of two flushes racing, the second saw depends_on_flush already cleared by the
// first (whose file flush was still in flight) and wrote its table before the flush completed.
TEST(TableCache, DependsOnFlushHoldsForEveryConcurrentWriter) {
  Fixture fx;
  auto cache = fx.cache(8);
  dirty_table(fx, cache, 0, 0xd0);
  dirty_table(fx, cache, 1, 0xd1);
  cache.set_depends_on_flush();
  std::vector<uint64_t> flushes_before_write;
  fx.file.on_write = [&](uint64_t, uint64_t) {
    flushes_before_write.push_back(fx.file.flushes_done());
  };
  int done = 0;
  auto flusher = [&]() -> Task<void> {
    EXPECT_OK(co_await cache.flush());
    ++done;
  };
  fx.loop->spawn(flusher());
  fx.loop->spawn(flusher());
  run_until_quiet(*fx.loop);
  EXPECT_EQ(done, 2);
  ASSERT_FALSE(flushes_before_write.empty());
  for (uint64_t n : flushes_before_write) EXPECT_GE(n, 1u) << "a table written before the flush";
  EXPECT_FALSE(cache.has_dirty());
}

// Regression: write_entry did not wait for a write of the same table already in flight after
// its own dependency flush, so two writes of one table could be in flight at once; a disk may
// complete them in either order, and a flush could return before the older one landed.
TEST(TableCache, ARewriteNeverOverlapsTheOlderWrite) {
  Fixture fx;
  auto refcounts = fx.cache(8);
  auto l2 = fx.cache(8);
  dirty_table(fx, refcounts, 1, 0x11);
  dirty_table(fx, l2, 0, 0xe1);
  ASSERT_OK(fx.loop->run(l2.set_dependency(&refcounts)));  // keeps the writers waiting a while
  int overlapping = 0;
  fx.file.on_write = [&](uint64_t off, uint64_t) {
    if (off == off_of(0) && fx.file.writes_in_flight() > 0) ++overlapping;
  };
  fx.file.hold_io(true);
  int done = 0;
  auto flusher = [&]() -> Task<void> {
    EXPECT_OK(co_await l2.flush());
    ++done;
  };
  fx.loop->spawn(flusher());
  fx.loop->spawn(flusher());
  run_until_quiet(*fx.loop);
  // Complete held operations oldest first, changing the table before each, until it settles.
  uint8_t fill = 0xe1;
  for (int round = 0; round < 50 && fx.file.held() > 0; ++round) {
    if (fill < 0xe5) {
      auto r = fx.loop->run(l2.get(off_of(0)));
      ASSERT_OK(r);
      std::memset(r->data(), ++fill, kTable);
      l2.mark_dirty(*r);
    }
    fx.file.release_held(0);
    run_until_quiet(*fx.loop);
  }
  EXPECT_EQ(fx.file.held(), 0u);
  fx.file.hold_io(false);
  EXPECT_EQ(done, 2);
  EXPECT_EQ(overlapping, 0) << "a table was written while an older write of it was in flight";
  ASSERT_OK(fx.loop->run(l2.flush()));
  EXPECT_FALSE(l2.has_dirty());
  EXPECT_EQ(table_in(fx.file, off_of(0)), std::vector<uint8_t>(kTable, fill));
}

// Many coroutines on a small cache with random read and write failures: every table a get
// returns holds exactly what the model says (the file's content, or the last change made
// through the cache), every coroutine finishes, and after recovery a flush makes the file match.
RC_GTEST_PROP(TableCache, ContendedGetsWithFailuresNeverSeeWrongData, ()) {
  Fixture fx;
  const size_t capacity = *rc::gen::inRange<size_t>(2, 6);
  auto cache = fx.cache(capacity);
  const int tables = *rc::gen::inRange(1, 8);
  const int workers = *rc::gen::inRange(1, 48);
  std::map<uint64_t, std::vector<uint8_t>> model;
  for (int k = 0; k < tables; ++k) model[off_of(k)] = pattern(k);
  struct Step {
    int table;
    bool modify;
    int hold;  // turns the pin is held
  };
  std::vector<std::vector<Step>> plans;
  for (int w = 0; w < workers; ++w) {
    plans.push_back(*rc::gen::container<std::vector<Step>>(
        *rc::gen::inRange(1, 6),
        rc::gen::build<Step>(rc::gen::set(&Step::table, rc::gen::inRange(0, tables)),
                             rc::gen::set(&Step::modify),
                             rc::gen::set(&Step::hold, rc::gen::inRange(0, 3)))));
  }
  // Few reads and writes happen at all (a handful of tables), so failures start early.
  const int fail_reads_at = *rc::gen::inRange(0, 4);
  const int fail_read_count = *rc::gen::inRange(1, 4);
  const int fail_writes_at = *rc::gen::inRange(0, 6);
  const bool fail_writes = *rc::gen::arbitrary<bool>();
  fx.file.fail_reads(uint64_t(fail_reads_at), uint64_t(fail_read_count));
  if (fail_writes) fx.file.fail_from_op(uint64_t(fail_writes_at));

  int finished = 0;
  int wrong = 0;
  uint8_t stamp = 0;
  auto worker = [&](const std::vector<Step>* plan) -> Task<void> {
    for (const Step& s : *plan) {
      uint64_t off = off_of(s.table);
      auto r = co_await cache.get(off);
      if (!r) continue;
      if (data_of(*r) != model[off]) ++wrong;
      if (s.modify) {
        uint8_t v = ++stamp;
        r->data()[v % kTable] = v;
        cache.mark_dirty(*r);
        model[off] = data_of(*r);
      }
      for (int i = 0; i < s.hold; ++i) co_await fx.loop->yield();
    }
    ++finished;
  };
  for (auto& p : plans) fx.loop->spawn(worker(&p));
  run_until_quiet(*fx.loop);
  RC_ASSERT(finished == workers);
  RC_ASSERT(wrong == 0);
  fx.file.recover();
  auto flushed = fx.loop->run(cache.flush());
  RC_ASSERT(flushed.has_value());
  RC_ASSERT(!cache.has_dirty());
  for (auto& [off, bytes] : model) RC_ASSERT(table_in(fx.file, off) == bytes);
}

}  // namespace
}  // namespace img::qcow2
