// IoLoop without io_uring: operations run as plain syscalls, and poll must not block the thread,
// or a second coroutine waiting on its own descriptor (a second virtio-blk queue) is never served.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "img/file.h"
#include "img/mem_file.h"
#include "test_util.h"

namespace img {
namespace {

std::unique_ptr<IoLoop> fallback_loop() {
  auto l = IoLoop::create({.force_sync_fallback = true});
  if (!l) {
    ADD_FAILURE() << l.error().to_string();
    std::abort();
  }
  return std::move(*l);
}

// Waits up to 5 s for flag; a hang in the code under test fails the test instead of stalling it.
bool wait_for(const std::atomic<bool>& flag) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!flag.load()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

TEST(IoLoopFallback, ForcedFallbackHasNoRing) {
  auto loop = fallback_loop();
  EXPECT_FALSE(loop->has_uring());
  EXPECT_NE(loop->uring_error().find("force_sync_fallback"), std::string::npos);
}

// Bug: the fallback ran poll(fd, -1) inline, so the first coroutine to wait blocked the thread
// and the second queue's notification was never seen.
TEST(IoLoopFallback, TwoPollersOnTheirOwnEventfdsAreBothServed) {
  auto loop = fallback_loop();
  int efd[2] = {eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
  ASSERT_GE(efd[0], 0);
  ASSERT_GE(efd[1], 0);
  std::atomic<bool> served[2] = {false, false};
  std::vector<int> order;  // written by the loop thread, read after join
  auto waiter = [&](int i) -> Task<void> {
    int r = co_await loop->poll(efd[i], POLLIN);
    uint64_t v;
    if (r > 0 && (r & POLLIN) && ::read(efd[i], &v, sizeof v) == sizeof v) {
      order.push_back(i);
      served[i].store(true);
    }
  };
  std::thread t([&] {
    loop->spawn(waiter(0));
    loop->spawn(waiter(1));
    loop->drain();
  });
  uint64_t one = 1;
  ASSERT_EQ(::write(efd[1], &one, sizeof one), 8);
  bool second_served = wait_for(served[1]);
  ASSERT_EQ(::write(efd[0], &one, sizeof one), 8);
  bool first_served = wait_for(served[0]);
  if (!first_served || !second_served) {
    // Unstick whichever waiter remains so the thread can be joined.
    for (int fd : efd) ASSERT_EQ(::write(fd, &one, sizeof one), 8);
  }
  t.join();
  EXPECT_TRUE(second_served) << "the second poller was not served while the first waited";
  EXPECT_TRUE(first_served);
  EXPECT_EQ(order, (std::vector<int>{1, 0}));
  ::close(efd[0]);
  ::close(efd[1]);
}

// wake() from another thread interrupts a loop that has nothing but a parked poll.
TEST(IoLoopFallback, WakeInterruptsAParkedWait) {
  auto loop = fallback_loop();
  int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_GE(efd, 0);
  std::atomic<bool> woke{false}, done{false};
  std::thread t([&] {
    loop->spawn([](IoLoop& l, int fd, std::atomic<bool>* d) -> Task<void> {
      co_await l.poll(fd, POLLIN);
      d->store(true);
    }(*loop, efd, &done));
    loop->run_once(true);  // returns once woken, the poll still parked
    woke.store(true);
  });
  loop->wake();
  bool ok = wait_for(woke);
  if (!ok) {
    uint64_t one = 1;
    ASSERT_EQ(::write(efd, &one, sizeof one), 8);
  }
  t.join();
  EXPECT_TRUE(ok);
  EXPECT_FALSE(done.load());
  uint64_t one = 1;
  ASSERT_EQ(::write(efd, &one, sizeof one), 8);
  loop->drain();
  EXPECT_TRUE(done.load());
  ::close(efd);
}

// Files still work in fallback mode: their operations complete inline.
TEST(IoLoopFallback, HostFileReadsAndWrites) {
  auto loop = fallback_loop();
  test::TempDir dir;
  auto f = open_host_file(*loop, dir.file("a"), {.create = true});
  ASSERT_OK(f);
  std::vector<uint8_t> data(10000, 0x5a), back(10000);
  ASSERT_OK(loop->run((*f)->write(123, data.data(), data.size())));
  ASSERT_OK(loop->run((*f)->flush()));
  ASSERT_OK(loop->run((*f)->read(123, back.data(), back.size())));
  EXPECT_EQ(back, data);
}

}  // namespace
}  // namespace img
