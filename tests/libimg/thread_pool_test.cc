// ThreadPool (util/thread_pool.h): its per-worker init (img/workers.h), which the VMM uses to put
// its seccomp filter on libimg's workers before they take a job, and its start when the OS
// refuses threads partway (an injected spawn that fails after some threads).
#include "util/thread_pool.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>

#include "img/workers.h"

namespace {

TEST(ThreadPoolInit, EveryWorkerRunsInitBeforeItsFirstJob) {
  std::atomic<int> inits{0};
  thread_local bool initialised = false;
  std::atomic<int> jobs_after_init{0};
  {
    img::ThreadPool pool(3, [&] {
      initialised = true;
      ++inits;
      return true;
    });
    for (int i = 0; i < 50; ++i) {
      pool.submit([&] {
        if (initialised) ++jobs_after_init;
      });
    }
  }  // the destructor runs what is queued, then joins
  EXPECT_EQ(inits.load(), 3);
  EXPECT_EQ(jobs_after_init.load(), 50);
}

TEST(ThreadPoolInit, WorkersWhoseInitFailsTakeNoJobAndJobsStillRun) {
  std::thread::id caller = std::this_thread::get_id();
  std::atomic<int> refused{0};
  img::ThreadPool pool(2, [&] {
    ++refused;
    return false;
  });
  // Each worker leaves right after its init says no.
  for (int i = 0; i < 5000 && refused.load() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(refused.load(), 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::thread::id ran_on;
  pool.submit([&] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, caller);
}

TEST(ThreadPoolInit, SharedWorkersCannotBeRestartedWithAnotherInit) {
  // In a child: the shared pool is process-wide and other tests use it.
  pid_t pid = fork();
  if (pid == 0) {
    std::atomic<int> inits{0};
    if (!img::start_shared_workers([&] { return ++inits, true; })) _exit(1);
    if (img::start_shared_workers([] { return true; })) _exit(2);  // already running
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    img::ThreadPool::shared().submit([&] {
      std::lock_guard lock(mu);
      done = true;
      cv.notify_all();
    });
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return done; });
    for (int i = 0; i < 5000 && inits.load() < static_cast<int>(img::ThreadPool::shared().size());
         ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    _exit(inits.load() == static_cast<int>(img::ThreadPool::shared().size()) ? 0 : 3);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0);
}

// A spawn that makes `ok` threads, then fails as pthread_create does without resources. Before
// failing it waits until `before_fail()` holds, so the test fixes which comes first.
img::ThreadPool::Spawn failing_after(unsigned ok, std::function<bool()> before_fail = {}) {
  auto made = std::make_shared<unsigned>(0);
  return [=](std::function<void()> body) {
    if ((*made)++ < ok) return std::thread(std::move(body));
    for (int i = 0; before_fail && i < 5000 && !before_fail(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // their --alive_ too
    throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again));
  };
}

TEST(ThreadPoolStart, ThreadsRefusedPartwayLeaveAPoolOfTheOnesStarted) {
  std::atomic<int> ran{0};
  std::mutex mu;
  std::set<std::thread::id> on;
  {
    img::ThreadPool pool(6, {}, failing_after(2));
    EXPECT_EQ(pool.size(), 2u);
    for (int i = 0; i < 200; ++i) {
      pool.submit([&] {
        std::lock_guard lock(mu);
        on.insert(std::this_thread::get_id());
        ++ran;
      });
    }
  }
  EXPECT_EQ(ran.load(), 200);
  EXPECT_FALSE(on.count(std::this_thread::get_id()));  // the workers ran them all
  EXPECT_LE(on.size(), 2u);
}

// The started workers' init says no and they leave before the third thread is refused: no worker
// is left, so a job must run on the caller's thread at once instead of waiting in the queue for
// a worker that will never come (the pool once counted the refused threads only and kept 2).
TEST(ThreadPoolStart, RefusedThreadsAfterFailedInitsLeaveNoPhantomWorkers) {
  std::atomic<int> refused{0};
  img::ThreadPool pool(
      5,
      [&] {
        ++refused;
        return false;
      },
      failing_after(2, [&] { return refused.load() == 2; }));
  EXPECT_EQ(refused.load(), 2);
  std::thread::id ran_on;
  pool.submit([&] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

// The other order: the third thread is refused while the two started ones are still in init.
TEST(ThreadPoolStart, RefusedThreadsBeforeFailedInitsLeaveNoPhantomWorkers) {
  std::atomic<bool> go{false};
  std::atomic<int> refused{0};
  img::ThreadPool pool(
      5,
      [&] {
        while (!go.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        ++refused;
        return false;
      },
      failing_after(2));
  go = true;
  for (int i = 0; i < 5000 && refused.load() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(refused.load(), 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::thread::id ran_on;
  pool.submit([&] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(ThreadPoolStart, NoThreadAtAllRunsJobsOnTheCaller) {
  img::ThreadPool pool(3, {}, failing_after(0));
  EXPECT_EQ(pool.size(), 0u);
  int ran = 0;
  for (int i = 0; i < 10; ++i) pool.submit([&] { ++ran; });
  EXPECT_EQ(ran, 10);
}

}  // namespace
