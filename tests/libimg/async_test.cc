// WaitList, AsyncMutex and both() on their own, with dozens of coroutines on one IoLoop.
#include "util/async.h"

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "async_test_util.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;
using test::run_until_quiet;

TEST(WaitList, NotifyAllWakesEveryWaiter) {
  auto loop = make_loop();
  WaitList w(*loop);
  int woken = 0;
  auto waiter = [&]() -> Task<void> {
    co_await w.wait();
    ++woken;
  };
  for (int i = 0; i < 50; ++i) loop->spawn(waiter());
  run_until_quiet(*loop);
  EXPECT_EQ(woken, 0);
  EXPECT_FALSE(w.empty());
  w.notify_all();
  EXPECT_EQ(woken, 0) << "waiters resume from the loop, never inside notify_all";
  EXPECT_TRUE(w.empty());
  run_until_quiet(*loop);
  EXPECT_EQ(woken, 50);
}

// A notification reaches only those already waiting: one that waits again, or arrives after,
// needs the next notification. Callers re-check their condition in a loop, so nothing is lost.
TEST(WaitList, NotifyReachesOnlyThoseAlreadyWaiting) {
  auto loop = make_loop();
  WaitList w(*loop);
  int rounds = 0;
  auto twice = [&]() -> Task<void> {
    co_await w.wait();
    ++rounds;
    co_await w.wait();
    ++rounds;
  };
  loop->spawn(twice());
  w.notify_all();
  run_until_quiet(*loop);
  EXPECT_EQ(rounds, 1);
  w.notify_all();
  run_until_quiet(*loop);
  EXPECT_EQ(rounds, 2);
  EXPECT_EQ(loop->spawned_running(), 0u);
}

// The condition-variable pattern the cache and the lock use: every waiter sees the state change
// it waits for, however the notifications and the waiters interleave.
TEST(WaitList, ConditionLoopLosesNoWakeups) {
  auto loop = make_loop();
  WaitList w(*loop);
  int value = 0;
  int done = 0;
  auto waiter = [&](int want) -> Task<void> {
    while (value < want) co_await w.wait();
    ++done;
  };
  auto bumper = [&]() -> Task<void> {
    for (int i = 0; i < 40; ++i) {
      ++value;
      if (i % 3 == 0) w.notify_all();  // not every change notifies at once
      co_await loop->yield();
    }
    w.notify_all();
  };
  for (int i = 0; i < 40; ++i) loop->spawn(waiter(i + 1));
  loop->spawn(bumper());
  run_until_quiet(*loop);
  EXPECT_EQ(done, 40);
}

TEST(AsyncMutex, HandsOffInFifoOrder) {
  auto loop = make_loop();
  AsyncMutex mu(*loop);
  std::vector<int> order;
  auto locker = [&](int id) -> Task<void> {
    auto g = co_await mu.lock();
    order.push_back(id);
    co_await loop->yield();
  };
  for (int i = 0; i < 40; ++i) loop->spawn(locker(i));
  run_until_quiet(*loop);
  ASSERT_EQ(order.size(), 40u);
  for (int i = 0; i < 40; ++i) EXPECT_EQ(order[i], i);
  EXPECT_FALSE(mu.locked());
}

// On unlock the lock passes to the first waiter before it runs; a coroutine that locks again at
// once (no await between) must queue behind it instead of taking the lock back.
TEST(AsyncMutex, RelockDoesNotBargePastTheNextWaiter) {
  auto loop = make_loop();
  AsyncMutex mu(*loop);
  std::vector<char> order;
  auto greedy = [&]() -> Task<void> {
    for (int i = 0; i < 3; ++i) {
      auto g = co_await mu.lock();
      order.push_back('g');
      co_await loop->yield();
    }
  };
  auto other = [&]() -> Task<void> {
    for (int i = 0; i < 3; ++i) {
      auto g = co_await mu.lock();
      order.push_back('o');
      co_await loop->yield();
    }
  };
  loop->spawn(greedy());
  loop->spawn(other());
  run_until_quiet(*loop);
  EXPECT_EQ(std::string(order.begin(), order.end()), "gogogo");
}

RC_GTEST_PROP(AsyncMutex, ManyLockersExcludeEachOtherAndAllFinish, ()) {
  const auto holds =
      *rc::gen::container<std::vector<int>>(*rc::gen::inRange(1, 64), rc::gen::inRange(0, 4));
  auto loop = make_loop();
  AsyncMutex mu(*loop);
  int inside = 0, violations = 0, finished = 0;
  std::vector<size_t> order;
  auto locker = [&](size_t id) -> Task<void> {
    for (int i = 0; i < holds[id] % 2; ++i) co_await loop->yield();  // arrive at different turns
    auto g = co_await mu.lock();
    if (inside++ != 0) ++violations;
    order.push_back(id);
    for (int i = 0; i < holds[id]; ++i) co_await loop->yield();
    --inside;
    ++finished;
  };
  for (size_t i = 0; i < holds.size(); ++i) loop->spawn(locker(i));
  run_until_quiet(*loop);
  RC_ASSERT(finished == int(holds.size()));
  RC_ASSERT(violations == 0);
  RC_ASSERT(!mu.locked());
  // FIFO: those that arrived in the same turn got the lock in arrival order.
  std::vector<size_t> immediate, late;
  for (size_t id : order) (holds[id] % 2 ? late : immediate).push_back(id);
  RC_ASSERT(std::is_sorted(immediate.begin(), immediate.end()));
  RC_ASSERT(std::is_sorted(late.begin(), late.end()));
}

// both(): the two run interleaved, the call returns only once both have finished, and a's
// error wins over b's; with many joins at once and random delays on either side.
Task<Status> steps(IoLoop& loop, int n, std::vector<char>& trace, char tag, bool fail) {
  for (int i = 0; i < n; ++i) {
    trace.push_back(tag);
    co_await loop.yield();
  }
  trace.push_back(char(tag - 'a' + 'A'));  // finished
  if (fail) co_return make_error(ErrorCode::kIo, std::string("failed ") + tag, EIO);
  co_return Status{};
}

TEST(Both, RunsTheTwoInterleavedAndReturnsAfterBoth) {
  auto loop = make_loop();
  std::vector<char> trace;
  auto s = loop->run(
      both(*loop, steps(*loop, 3, trace, 'a', false), steps(*loop, 1, trace, 'b', false)));
  ASSERT_OK(s);
  std::string t(trace.begin(), trace.end());
  EXPECT_EQ(t.find('A') != std::string::npos && t.find('B') != std::string::npos, true) << t;
  EXPECT_LT(t.find('b'), t.find('A')) << "b started before a finished: " << t;
  EXPECT_EQ(loop->spawned_running(), 0u);
}

TEST(Both, ErrorsOfEitherSideComeBackAfterBothFinished) {
  for (int fa = 0; fa < 2; ++fa) {
    for (int fb = 0; fb < 2; ++fb) {
      for (int na : {0, 4}) {
        auto loop = make_loop();
        std::vector<char> trace;
        auto s = loop->run(
            both(*loop, steps(*loop, na, trace, 'a', fa), steps(*loop, 4 - na, trace, 'b', fb)));
        std::string t(trace.begin(), trace.end());
        SCOPED_TRACE(t);
        EXPECT_NE(t.find('A'), std::string::npos) << "a did not finish before both() returned";
        EXPECT_NE(t.find('B'), std::string::npos) << "b did not finish before both() returned";
        if (fa) {
          ASSERT_FALSE(s);
          EXPECT_NE(s.error().to_string().find("failed a"), std::string::npos);
        } else if (fb) {
          ASSERT_FALSE(s);
          EXPECT_NE(s.error().to_string().find("failed b"), std::string::npos);
        } else {
          EXPECT_OK(s);
        }
      }
    }
  }
}

RC_GTEST_PROP(Both, ManyJoinsAtOnceEachWaitForTheirOwnPair, ()) {
  const auto delays = *rc::gen::container<std::vector<std::pair<int, int>>>(
      *rc::gen::inRange(1, 40), rc::gen::pair(rc::gen::inRange(0, 5), rc::gen::inRange(0, 5)));
  auto loop = make_loop();
  int joined = 0, early = 0;
  auto joiner = [&](size_t id) -> Task<void> {
    std::vector<char> trace;
    auto s = co_await both(*loop, steps(*loop, delays[id].first, trace, 'a', id % 3 == 0),
                           steps(*loop, delays[id].second, trace, 'b', false));
    const std::string t(trace.begin(), trace.end());
    if (t.find('A') == std::string::npos || t.find('B') == std::string::npos) ++early;
    if (bool(s) == (id % 3 == 0)) ++early;
    ++joined;
  };
  for (size_t i = 0; i < delays.size(); ++i) loop->spawn(joiner(i));
  run_until_quiet(*loop);
  RC_ASSERT(joined == int(delays.size()));
  RC_ASSERT(early == 0);
  RC_ASSERT(loop->spawned_running() == 0u);
}

}  // namespace
}  // namespace img
