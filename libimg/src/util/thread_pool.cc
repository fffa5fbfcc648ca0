#include "util/thread_pool.h"

#include <atomic>
#include <system_error>

#include "img/workers.h"

namespace img {
namespace {

std::function<bool()>& shared_init() {
  static std::function<bool()> init;
  return init;
}
std::atomic<bool> shared_started{false};

}  // namespace

ThreadPool::ThreadPool(unsigned threads, std::function<bool()> init, Spawn spawn) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  alive_ = threads;
  threads_.reserve(threads);  // push_back must not throw with a thread running unowned
  for (unsigned i = 0; i < threads; ++i) {
    try {
      std::function<void()> body = [this, init] { work(init); };
      threads_.push_back(spawn ? spawn(std::move(body)) : std::thread(std::move(body)));
    } catch (const std::system_error&) {
      std::lock_guard<std::mutex> lock(mu_);
      // Only the workers never started: a started one whose init() said no has already taken
      // itself off (setting alive_ = i here would count it again and leave jobs queued forever).
      alive_ -= threads - i;
      break;  // keep the threads we got (errors are values: nothing escapes the library)
    }
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

ThreadPool& ThreadPool::shared() {
  shared_started.store(true);
  static ThreadPool pool(0, shared_init());
  return pool;
}

Status start_shared_workers(std::function<bool()> init) {
  if (shared_started.exchange(true)) {
    return invalid_argument("libimg's shared workers are already running");
  }
  shared_init() = std::move(init);
  (void)ThreadPool::shared();
  return {};
}

void ThreadPool::submit(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (alive_ > 0) {
      jobs_.push_back(std::move(job));
      cv_.notify_one();
      return;
    }
  }
  job();
}

void ThreadPool::work(const std::function<bool()>& init) {
  if (init && !init()) {
    std::lock_guard<std::mutex> lock(mu_);
    --alive_;
    return;  // start_shared_workers() runs init before any job exists
  }
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left to run
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

}  // namespace img
