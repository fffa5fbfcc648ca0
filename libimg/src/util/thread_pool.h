// ThreadPool: a fixed set of worker threads for CPU-bound work (compressing and decompressing
// qcow2 clusters), so every core works while the IoLoop thread keeps the disk busy.
//
//   co_await parallel_for(ThreadPool::shared(), loop, n, [&](size_t i) { ... });
//
// runs the n calls on the pool and resumes the awaiting coroutine on its own loop thread
// (IoLoop::post_remote) when the last one has finished; the loop thread never blocks on the pool.
//
// Thread-safety: submit() and parallel_for() may be called from any thread; the function passed
// to parallel_for runs on pool threads, concurrently for different i.
#pragma once

#include <atomic>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "img/io_loop.h"

namespace img {

class ThreadPool {
 public:
  // How a worker thread is made: std::thread by default; tests pass one that fails.
  using Spawn = std::function<std::thread(std::function<void()>)>;
  // threads == 0: one per core (std::thread::hardware_concurrency()). If the OS refuses threads
  // (spawn throws std::system_error), the pool keeps those it got; with none at all, or none
  // whose init() said yes, submit() runs jobs on the caller's thread.
  explicit ThreadPool(unsigned threads = 0, std::function<bool()> init = {}, Spawn spawn = {});
  ~ThreadPool();  // runs what is queued, then joins
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // The process-wide pool, sized by the core count, started on first use.
  static ThreadPool& shared();

  unsigned size() const { return static_cast<unsigned>(threads_.size()); }
  void submit(std::function<void()> job);

 private:
  void work(const std::function<bool()>& init);
  std::mutex mu_;
  unsigned alive_ = 0;  // workers taking jobs (guarded by mu_)
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// Awaitable: runs fn(0) .. fn(n-1) on the pool, resumes on loop when all returned.
template <class F>
class ParallelFor {
 public:
  ParallelFor(ThreadPool& pool, IoLoop& loop, size_t n, F fn)
      : pool_(pool), loop_(loop), n_(n), fn_(std::move(fn)) {}
  bool await_ready() const noexcept { return n_ == 0; }
  void await_suspend(std::coroutine_handle<> h) {
    h_ = h;
    left_.store(n_, std::memory_order_relaxed);
    loop_.expect_remote();
    // The awaiter lives in the suspended coroutine's frame until the last job posts h back.
    for (size_t i = 0; i < n_; ++i) {
      pool_.submit([this, i] {
        fn_(i);
        if (left_.fetch_sub(1, std::memory_order_acq_rel) == 1) loop_.post_remote(h_);
      });
    }
  }
  void await_resume() const noexcept {}

 private:
  ThreadPool& pool_;
  IoLoop& loop_;
  size_t n_;
  F fn_;
  std::coroutine_handle<> h_;
  std::atomic<size_t> left_{0};
};

template <class F>
ParallelFor<F> parallel_for(ThreadPool& pool, IoLoop& loop, size_t n, F fn) {
  return ParallelFor<F>(pool, loop, n, std::move(fn));
}

}  // namespace img
