// ClusterLocks: per-guest-cluster locks for the qcow2 write path. A write to clusters that are
// already allocated (and owned: COPIED) takes them shared, so writes into one cluster overlap;
// anything that changes a cluster's mapping (allocation, copy-on-write, discard, zeroing) takes
// it exclusive, so two allocating writers never race and overlapping writes are ordered.
//
// Fair: each cluster grants in FIFO order. A request that finds others queued on a cluster
// queues behind them even if the holders would admit it, so a stream of shared writers cannot
// starve an exclusive one; consecutive shared requests at the head are granted together. The
// releaser grants (hand-off), so a woken request already holds its cluster.
//
// Deadlock freedom: a request locks its range one cluster at a time in ascending order, and
// only ever waits on a cluster above every cluster it holds. A request waiting on cluster c
// waits for c's holders (each waiting, if at all, on a cluster above c) and for those queued
// ahead of it on c (each waiting on c, holding only clusters below c, and ahead in a FIFO).
// Along any chain of waits the cluster waited on never decreases and, at one cluster, the queue
// position strictly advances, so the chain cannot close into a cycle. (A shared holder of [a,b]
// waiting on b+1 never needs a, so an exclusive waiter queued on a cannot block it.) The one
// rule callers keep: never request a range while holding a guard (a nested lock of a cluster
// already held would wait behind a queued exclusive waiter that waits for the caller).
//
// Cost: taking an uncontended cluster is a hash lookup and an insert of a recycled node; no
// allocation in the steady state, none at all for waiting (the waiter lives in the coroutine).
//
// Thread-safety: one IoLoop thread.
#pragma once

#include <coroutine>
#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

#include "img/io_loop.h"
#include "img/task.h"

namespace img::qcow2 {

class ClusterLocks {
 public:
  explicit ClusterLocks(IoLoop& loop) : loop_(loop) {}

  class Guard {
   public:
    Guard() = default;
    Guard(ClusterLocks* l, uint64_t first, uint64_t count, bool exclusive)
        : l_(l), first_(first), count_(count), exclusive_(exclusive) {}
    Guard(Guard&& o) noexcept
        : l_(std::exchange(o.l_, nullptr)),
          first_(o.first_),
          count_(o.count_),
          exclusive_(o.exclusive_) {}
    Guard& operator=(Guard&& o) noexcept {
      if (this != &o) {
        release();
        l_ = std::exchange(o.l_, nullptr);
        first_ = o.first_;
        count_ = o.count_;
        exclusive_ = o.exclusive_;
      }
      return *this;
    }
    ~Guard() { release(); }
    void release() {
      if (l_) std::exchange(l_, nullptr)->unlock(first_, count_, exclusive_);
    }

   private:
    ClusterLocks* l_ = nullptr;
    uint64_t first_ = 0, count_ = 0;
    bool exclusive_ = false;
  };

  // Locks guest clusters [first, first+count).
  Task<Guard> lock(uint64_t first, uint64_t count, bool exclusive) {
    for (uint64_t c = first; c < first + count; ++c) {
      State& s = state(c);
      if (!s.head && admits(s, exclusive)) {
        take(s, exclusive);
        continue;
      }
      // The state stays in the map while anyone is queued on it, and the releaser takes the
      // cluster on our behalf before resuming us.
      co_await Waiter{&s, exclusive};
    }
    co_return Guard(this, first, count, exclusive);
  }

  bool idle() const { return map_.empty(); }

 private:
  struct Waiter;
  struct State {
    int shared = 0;
    bool exclusive = false;
    Waiter* head = nullptr;  // FIFO of queued requests
    Waiter* tail = nullptr;
  };
  // A queued request; lives in the waiting coroutine's frame.
  struct Waiter {
    State* s;
    bool exclusive;
    Waiter* next = nullptr;
    std::coroutine_handle<> h;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> handle) {
      h = handle;
      (s->tail ? s->tail->next : s->head) = this;
      s->tail = this;
    }
    void await_resume() const noexcept {}
  };
  // Recycled map nodes kept for reuse, so the write path does not allocate per cluster.
  static constexpr size_t kSpareNodes = 64;

  static bool admits(const State& s, bool exclusive) {
    return !s.exclusive && (!exclusive || s.shared == 0);
  }
  static void take(State& s, bool exclusive) {
    if (exclusive) {
      s.exclusive = true;
    } else {
      s.shared++;
    }
  }
  State& state(uint64_t c) {
    auto it = map_.find(c);
    if (it != map_.end()) return it->second;
    if (spare_.empty()) return map_.try_emplace(c).first->second;
    auto node = std::move(spare_.back());
    spare_.pop_back();
    node.key() = c;
    node.mapped() = State{};
    return map_.insert(std::move(node)).position->second;
  }
  void unlock(uint64_t first, uint64_t count, bool exclusive) {
    for (uint64_t c = first; c < first + count; ++c) {
      auto it = map_.find(c);
      if (it == map_.end()) continue;  // not reached: a guard's clusters are in the map
      State& s = it->second;
      if (exclusive) {
        s.exclusive = false;
      } else {
        s.shared--;
      }
      // Grant from the head while it is admitted: one exclusive, or a run of shared.
      while (s.head && admits(s, s.head->exclusive)) {
        Waiter* w = s.head;
        s.head = w->next;
        if (!s.head) s.tail = nullptr;
        take(s, w->exclusive);
        loop_.post(w->h);
      }
      if (s.shared == 0 && !s.exclusive && !s.head) {
        if (spare_.size() < kSpareNodes) {
          spare_.push_back(map_.extract(it));
        } else {
          map_.erase(it);
        }
      }
    }
  }

  IoLoop& loop_;
  std::unordered_map<uint64_t, State> map_;
  std::vector<std::unordered_map<uint64_t, State>::node_type> spare_;
};

}  // namespace img::qcow2
