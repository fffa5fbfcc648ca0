// ClusterLocks on its own: exclusion, overlap of shared holders, fairness to exclusive waiters,
// and freedom from deadlock for ranges locked in ascending order, with many coroutines.
#include "qcow2/cluster_locks.h"

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "async_test_util.h"
#include "test_util.h"

namespace img::qcow2 {
namespace {

using test::make_loop;
using test::run_until_quiet;

// Who holds which cluster, as the coroutines report it; counts any violation of the lock's
// promise (an exclusive holder alongside anyone else).
struct Holders {
  explicit Holders(uint64_t clusters) : shared(clusters), exclusive(clusters) {}
  std::vector<int> shared, exclusive;
  int violations = 0;
  int max_shared = 0;
  void enter(uint64_t first, uint64_t count, bool excl) {
    for (uint64_t c = first; c < first + count; ++c) {
      if (exclusive[c] || (excl && shared[c])) ++violations;
      if (excl) {
        ++exclusive[c];
      } else {
        max_shared = std::max(max_shared, ++shared[c]);
      }
    }
  }
  void leave(uint64_t first, uint64_t count, bool excl) {
    for (uint64_t c = first; c < first + count; ++c) --(excl ? exclusive : shared)[c];
  }
};

struct Fixture {
  std::unique_ptr<IoLoop> loop = make_loop();
  ClusterLocks locks{*loop};
  Holders holders{64};
  std::vector<std::string> order;  // names, in the order they got their whole range
  int finished = 0;

  Task<void> hold(std::string name, uint64_t first, uint64_t count, bool excl, int turns) {
    auto g = co_await locks.lock(first, count, excl);
    holders.enter(first, count, excl);
    order.push_back(name);
    for (int i = 0; i < turns; ++i) co_await loop->yield();
    holders.leave(first, count, excl);
    ++finished;
  }
};

TEST(ClusterLocks, ExclusiveHoldersNeverOverlap) {
  Fixture fx;
  for (int i = 0; i < 40; ++i) {
    fx.loop->spawn(fx.hold("x" + std::to_string(i), uint64_t(i % 3), 3, true, i % 4));
  }
  run_until_quiet(*fx.loop);
  EXPECT_EQ(fx.finished, 40);
  EXPECT_EQ(fx.holders.violations, 0);
  EXPECT_TRUE(fx.locks.idle());
}

TEST(ClusterLocks, SharedHoldersOverlap) {
  Fixture fx;
  for (int i = 0; i < 20; ++i) fx.loop->spawn(fx.hold("s", 7, 2, false, 3));
  run_until_quiet(*fx.loop);
  EXPECT_EQ(fx.finished, 20);
  EXPECT_EQ(fx.holders.max_shared, 20) << "shared holders of one cluster run together";
  EXPECT_TRUE(fx.locks.idle());
}

// Regression: a shared request was granted whenever no exclusive lock was held, overtaking a
// queued exclusive waiter, so a steady stream of overlapping readers starved an allocating
// write for as long as the stream lasted.
TEST(ClusterLocks, SharedStreamDoesNotStarveAnExclusiveWaiter) {
  Fixture fx;
  constexpr int kStream = 200;
  bool x_in = false;
  int started = 0;
  auto writer = [&]() -> Task<void> {
    auto g = co_await fx.locks.lock(5, 1, true);
    x_in = true;
  };
  // Every turn a new reader arrives and holds for 3 turns, so readers always overlap.
  auto stream = [&]() -> Task<void> {
    for (; started < kStream && !x_in; ++started) {
      fx.loop->spawn(fx.hold("s", 5, 1, false, 3));
      if (started == 2) fx.loop->spawn(writer());
      co_await fx.loop->yield();
    }
  };
  fx.loop->spawn(stream());
  run_until_quiet(*fx.loop);
  EXPECT_TRUE(x_in);
  EXPECT_LT(started, 10) << "the exclusive waiter got in only when the stream of readers ended";
  EXPECT_EQ(fx.holders.violations, 0);
  EXPECT_TRUE(fx.locks.idle());
}

// Fairness must not deadlock: R1 holds [2,3] shared and waits on 4 (held by H); X waits
// exclusive on 2 holding nothing; later shared requests on 2 queue behind X. R1 never needs
// anything X is queued on, so H's release lets R1, then X, then the readers through.
TEST(ClusterLocks, FairnessDoesNotDeadlockAscendingRanges) {
  Fixture fx;
  fx.loop->spawn(fx.hold("H", 4, 1, true, 3));
  fx.loop->spawn(fx.hold("R1", 2, 3, false, 2));
  fx.loop->spawn(fx.hold("X", 2, 1, true, 2));
  fx.loop->spawn(fx.hold("R2", 2, 1, false, 2));
  fx.loop->spawn(fx.hold("R3", 0, 3, false, 2));  // holds 0 and 1, queued on 2 behind X
  fx.loop->spawn(fx.hold("R4", 0, 1, false, 2));  // 0 is only shared: no wait
  run_until_quiet(*fx.loop);
  EXPECT_EQ(fx.finished, 6);
  EXPECT_EQ(fx.order, (std::vector<std::string>{"H", "R4", "R1", "X", "R2", "R3"}));
  EXPECT_EQ(fx.holders.violations, 0);
  EXPECT_TRUE(fx.locks.idle());
}

// After an exclusive holder, the shared requests queued together behind it are granted together.
TEST(ClusterLocks, SharedWaitersQueuedTogetherAreGrantedTogether) {
  Fixture fx;
  fx.loop->spawn(fx.hold("X1", 1, 1, true, 2));
  for (int i = 0; i < 10; ++i) fx.loop->spawn(fx.hold("s", 1, 1, false, 3));
  fx.loop->spawn(fx.hold("X2", 1, 1, true, 1));
  run_until_quiet(*fx.loop);
  EXPECT_EQ(fx.finished, 12);
  EXPECT_EQ(fx.holders.max_shared, 10);
  EXPECT_EQ(fx.order.front(), "X1");
  EXPECT_EQ(fx.order.back(), "X2");
  EXPECT_EQ(fx.holders.violations, 0);
}

// Random ranges, modes and hold times on a few clusters: every request finishes (no deadlock, no
// lost wake-up), the lock's promise holds throughout, and nothing is left behind.
RC_GTEST_PROP(ClusterLocks, RandomAscendingRangesNeverDeadlock, ()) {
  struct Req {
    uint64_t first, count;
    bool exclusive;
    int delay, hold;
  };
  const auto reqs = *rc::gen::container<std::vector<Req>>(
      *rc::gen::inRange(1, 60),
      rc::gen::build<Req>(rc::gen::set(&Req::first, rc::gen::inRange<uint64_t>(0, 8)),
                          rc::gen::set(&Req::count, rc::gen::inRange<uint64_t>(1, 5)),
                          rc::gen::set(&Req::exclusive),
                          rc::gen::set(&Req::delay, rc::gen::inRange(0, 4)),
                          rc::gen::set(&Req::hold, rc::gen::inRange(0, 4))));
  Fixture fx;
  auto start = [&](const Req* r) -> Task<void> {
    for (int i = 0; i < r->delay; ++i) co_await fx.loop->yield();
    co_await fx.hold("r", r->first, r->count, r->exclusive, r->hold);
  };
  for (const Req& r : reqs) fx.loop->spawn(start(&r));
  run_until_quiet(*fx.loop);
  RC_ASSERT(fx.finished == int(reqs.size()));
  RC_ASSERT(fx.holders.violations == 0);
  RC_ASSERT(fx.locks.idle());
}

}  // namespace
}  // namespace img::qcow2
