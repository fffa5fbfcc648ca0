// FaultFile's injection tools used by the tests of concurrent code: failing reads and flushes,
// holding operations and completing them out of order.
#include <gtest/gtest.h>

#include <vector>

#include "async_test_util.h"
#include "img/mem_file.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;
using test::run_until_quiet;

TEST(FaultFile, FailsTheReadsInTheWindowOnly) {
  auto loop = make_loop();
  FaultFile f(loop.get());
  f.bytes().assign(16, 7);
  f.fail_reads(1, 2);
  uint8_t b[4];
  std::vector<bool> ok;
  for (int i = 0; i < 4; ++i) ok.push_back(loop->run(f.read_exact(0, b, 4, "x")).has_value());
  EXPECT_EQ(ok, (std::vector<bool>{true, false, false, true}));
  EXPECT_EQ(f.reads_seen(), 4u);
}

TEST(FaultFile, FailedFlushMakesNothingDurableUntilOneSucceeds) {
  auto loop = make_loop();
  FaultFile f(loop.get());
  uint8_t b[4] = {1, 2, 3, 4};
  ASSERT_OK(loop->run(f.write(0, b, 4)));
  f.fail_flushes(0);
  EXPECT_FALSE(loop->run(f.flush()).has_value());
  EXPECT_TRUE(f.durable_bytes().empty());
  ASSERT_OK(loop->run(f.flush()));
  EXPECT_EQ(f.durable_bytes().size(), 4u);
  EXPECT_EQ(f.flushes_done(), 1u);
  // After a failed write every flush fails (fsync reports a lost write) until recover().
  f.fail_from_op(0);
  EXPECT_FALSE(loop->run(f.write(0, b, 4)).has_value());
  EXPECT_FALSE(loop->run(f.flush()).has_value());
  f.recover();
  ASSERT_OK(loop->run(f.write(0, b, 4)));
  ASSERT_OK(loop->run(f.flush()));
}

TEST(FaultFile, HeldWritesCompleteInTheOrderReleased) {
  auto loop = make_loop();
  FaultFile f(loop.get());
  std::vector<size_t> in_flight_at_issue;
  f.on_write = [&](uint64_t, uint64_t) { in_flight_at_issue.push_back(f.writes_in_flight()); };
  f.hold_io(true);
  int done = 0;
  auto writer = [&](uint8_t v) -> Task<void> {
    EXPECT_OK(co_await f.write(0, &v, 1));
    ++done;
  };
  loop->spawn(writer(1));
  loop->spawn(writer(2));
  run_until_quiet(*loop);
  EXPECT_EQ(f.held(), 2u);
  EXPECT_EQ(done, 0);
  EXPECT_EQ(in_flight_at_issue, (std::vector<size_t>{0, 1}));
  f.release_held(1);  // the newer write lands first
  run_until_quiet(*loop);
  f.release_held(0);
  run_until_quiet(*loop);
  EXPECT_EQ(done, 2);
  EXPECT_EQ(f.writes_in_flight(), 0u);
  EXPECT_EQ(f.bytes()[0], 1) << "the older write landed last";
}

}  // namespace
}  // namespace img
