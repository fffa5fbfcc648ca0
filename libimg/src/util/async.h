// Coroutine synchronisation on one IoLoop: WaitList (wake every waiter), AsyncMutex (FIFO,
// hand-off on unlock), both() (two tasks at once, joined). Waiters are resumed through the loop's
// ready queue, never inline, so an unlock never runs someone else's critical section on the
// caller's stack.
//
// Thread-safety: one IoLoop thread.
#pragma once

#include <coroutine>
#include <deque>
#include <utility>
#include <vector>

#include "img/io_loop.h"
#include "img/status.h"
#include "img/task.h"

namespace img {

class WaitList {
 public:
  explicit WaitList(IoLoop& loop) : loop_(&loop) {}
  auto wait() {
    struct Awaiter {
      WaitList* w;
      bool await_ready() const noexcept { return false; }
      void await_suspend(std::coroutine_handle<> h) { w->waiters_.push_back(h); }
      void await_resume() const noexcept {}
    };
    return Awaiter{this};
  }
  void notify_all() {
    for (auto h : waiters_) loop_->post(h);
    waiters_.clear();
  }
  bool empty() const { return waiters_.empty(); }

 private:
  IoLoop* loop_;
  std::vector<std::coroutine_handle<>> waiters_;
};

class AsyncMutex {
 public:
  explicit AsyncMutex(IoLoop& loop) : loop_(&loop) {}

  class Guard {
   public:
    Guard() = default;
    explicit Guard(AsyncMutex* m) : m_(m) {}
    Guard(Guard&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
    Guard& operator=(Guard&& o) noexcept {
      if (this != &o) {
        release();
        m_ = std::exchange(o.m_, nullptr);
      }
      return *this;
    }
    ~Guard() { release(); }
    void release() {
      if (m_) std::exchange(m_, nullptr)->unlock();
    }

   private:
    AsyncMutex* m_ = nullptr;
  };

  // auto guard = co_await mu.lock();
  auto lock() {
    struct Awaiter {
      AsyncMutex* m;
      bool await_ready() noexcept {
        if (m->locked_) return false;
        m->locked_ = true;
        return true;
      }
      void await_suspend(std::coroutine_handle<> h) { m->waiters_.push_back(h); }
      Guard await_resume() noexcept { return Guard(m); }
    };
    return Awaiter{this};
  }
  bool locked() const { return locked_; }

 private:
  void unlock() {
    if (waiters_.empty()) {
      locked_ = false;
      return;
    }
    // Hand the lock straight to the next waiter: it stays locked.
    auto h = waiters_.front();
    waiters_.pop_front();
    loop_->post(h);
  }
  IoLoop* loop_;
  bool locked_ = false;
  std::deque<std::coroutine_handle<>> waiters_;
};

// Runs a and b at the same time (a is started first, in the background; b is awaited) and
// returns once both have finished: never earlier, so neither outlives the caller's frame or
// what it references, even when one fails. The result is a's error if a failed, else b's.
inline Task<Status> both(IoLoop& loop, Task<Status> a, Task<Status> b) {
  struct Join {
    explicit Join(IoLoop& l) : done_list(l) {}
    Status status;
    bool done = false;
    WaitList done_list;
  };
  Join j(loop);
  loop.spawn([](Task<Status> t, Join* j) -> Task<void> {
    j->status = co_await std::move(t);
    j->done = true;
    j->done_list.notify_all();
  }(std::move(a), &j));
  Status sb = co_await std::move(b);
  while (!j.done) co_await j.done_list.wait();
  if (!j.status) co_return std::move(j.status);
  co_return sb;
}

}  // namespace img
