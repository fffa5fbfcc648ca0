#include "io/range_lock.h"

#include <vector>

#include "img/task.h"
#include "test_util.h"

namespace img {
namespace {

// Each task takes its range, yields a few turns while holding it, and logs entry and exit.
class RangeLockTest : public ::testing::Test {
 protected:
  void take(int id, uint64_t b, uint64_t e, bool excl, int hold_turns = 3) {
    loop_->spawn(
        [](RangeLockTest* t, int id, uint64_t b, uint64_t e, bool excl, int turns) -> Task<void> {
          RangeLock::Holder h;
          co_await t->lock_.lock(h, b, e, excl);
          t->log_.push_back(id);
          for (int i = 0; i < turns; ++i) co_await t->loop_->yield();
          t->log_.push_back(-id);
        }(this, id, b, e, excl, hold_turns));
  }
  std::unique_ptr<IoLoop> loop_ = test::make_loop();
  RangeLock lock_{*loop_};
  std::vector<int> log_;
};

TEST_F(RangeLockTest, SharedRangesOverlapFreely) {
  take(1, 0, 100, false);
  take(2, 50, 150, false);
  loop_->drain();
  EXPECT_EQ(log_, (std::vector<int>{1, 2, -1, -2}));
  EXPECT_TRUE(lock_.idle());
}

TEST_F(RangeLockTest, ExclusiveWaitsForOverlappingSharedAndBlocksLaterShared) {
  take(1, 0, 100, false);
  take(2, 90, 200, true);    // overlaps 1
  take(3, 150, 160, false);  // overlaps only 2, which came first
  take(4, 300, 400, false);  // overlaps nobody
  loop_->drain();
  EXPECT_EQ(log_, (std::vector<int>{1, 4, -1, -4, 2, -2, 3, -3}));
  EXPECT_TRUE(lock_.idle());
}

TEST_F(RangeLockTest, DisjointExclusiveRangesRunInParallel) {
  take(1, 0, 4096, true);
  take(2, 4096, 8192, true);  // adjacent, not overlapping
  take(3, 100, 200, true);    // inside 1
  loop_->drain();
  EXPECT_EQ(log_, (std::vector<int>{1, 2, -1, -2, 3, -3}));
}

TEST_F(RangeLockTest, SharedStreamDoesNotStarveExclusive) {
  take(1, 0, 100, false, 5);
  take(2, 0, 100, true, 1);
  take(3, 0, 100, false, 1);  // arrives after 2, so waits behind it though 1 is shared
  loop_->drain();
  EXPECT_EQ(log_, (std::vector<int>{1, -1, 2, -2, 3, -3}));
}

}  // namespace
}  // namespace img
