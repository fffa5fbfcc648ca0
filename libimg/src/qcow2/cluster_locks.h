// ClusterLocks: per-guest-cluster locks for the qcow2 write path. A write to clusters that are
// already allocated (and owned: COPIED) takes them shared, so writes into one cluster overlap;
// anything that changes a cluster's mapping (allocation, copy-on-write, discard, zeroing) takes
// it exclusive, so two allocating writers never race and overlapping writes are ordered.
// Ranges are always locked in ascending order, so two requests cannot deadlock.
//
// Thread-safety: one IoLoop thread.
#pragma once

#include <cstdint>
#include <unordered_map>

#include "util/async.h"

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
        : l_(std::exchange(o.l_, nullptr)), first_(o.first_), count_(o.count_),
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
      for (;;) {
        auto it = map_.find(c);
        if (it == map_.end()) {
          it = map_.emplace(c, std::make_unique<State>(loop_)).first;
        }
        State& s = *it->second;
        if (!s.exclusive && (!exclusive || s.shared == 0)) {
          if (exclusive) s.exclusive = true;
          else s.shared++;
          break;
        }
        s.waiting++;
        co_await s.waiters.wait();
        // The state may have been erased and re-made; look it up again.
        auto again = map_.find(c);
        if (again != map_.end()) again->second->waiting--;
      }
    }
    co_return Guard(this, first, count, exclusive);
  }

  bool idle() const { return map_.empty(); }

 private:
  struct State {
    explicit State(IoLoop& loop) : waiters(loop) {}
    int shared = 0;
    bool exclusive = false;
    int waiting = 0;
    WaitList waiters;
  };
  void unlock(uint64_t first, uint64_t count, bool exclusive) {
    for (uint64_t c = first; c < first + count; ++c) {
      auto it = map_.find(c);
      if (it == map_.end()) continue;
      State& s = *it->second;
      if (exclusive) s.exclusive = false;
      else s.shared--;
      if (s.shared == 0 && !s.exclusive) {
        s.waiters.notify_all();
        // Waiters re-find the state; keep it while any are queued.
        if (s.waiting == 0) map_.erase(it);
      }
    }
  }

  IoLoop& loop_;
  std::unordered_map<uint64_t, std::unique_ptr<State>> map_;
};

}  // namespace img::qcow2
