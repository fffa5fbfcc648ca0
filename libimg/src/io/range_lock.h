// RangeLock: byte ranges of one file, held shared (plain writes, which may overlap each other) or
// exclusive (a read-modify-write of O_DIRECT blocks, which must see no other write to its blocks
// between its read and its write). Waiters are granted in arrival order among those that
// overlap, so a stream of shared holders cannot starve an exclusive one.
//
// A Holder lives in the caller's coroutine frame and is linked into the lock intrusively: taking
// a shared range while no exclusive range is held or waiting costs two pointer writes, no
// allocation and no search, so aligned O_DIRECT writes stay cheap when nothing bounces.
//
// Thread-safety: one IoLoop thread.
#pragma once

#include <coroutine>
#include <cstdint>

#include "img/io_loop.h"

namespace img {

class RangeLock {
 public:
  class Holder;

  explicit RangeLock(IoLoop& loop) : loop_(&loop) {}
  RangeLock(const RangeLock&) = delete;
  RangeLock& operator=(const RangeLock&) = delete;
  // REQUIRES: no holder is linked (every request has finished).
  ~RangeLock() = default;

  // co_await lock.lock(h, begin, end, exclusive): holds [begin, end) until h is destroyed or
  // h.release() is called. REQUIRES: h holds nothing; begin < end.
  auto lock(Holder& h, uint64_t begin, uint64_t end, bool exclusive);

  // For tests and assertions.
  bool idle() const { return held_.empty() && waiting_.empty(); }

  class Holder {
   public:
    Holder() = default;
    Holder(const Holder&) = delete;
    Holder& operator=(const Holder&) = delete;
    ~Holder() { release(); }
    void release();

   private:
    friend class RangeLock;
    RangeLock* lock_ = nullptr;  // set while held or waiting
    uint64_t begin_ = 0, end_ = 0;
    bool exclusive_ = false;
    bool waiting_ = false;
    std::coroutine_handle<> waiter_;
    Holder* prev_ = nullptr;
    Holder* next_ = nullptr;
  };

 private:
  // An intrusive doubly linked list of holders, in arrival order.
  struct List {
    Holder* head = nullptr;
    Holder* tail = nullptr;
    bool empty() const { return head == nullptr; }
    void push_back(Holder* h);
    void erase(Holder* h);
  };

  static bool overlap(const Holder& a, const Holder& b) {
    return a.begin_ < b.end_ && b.begin_ < a.end_;
  }
  // Whether h, arriving now or waiting at its place, may be granted.
  bool grantable(const Holder& h) const;
  // Tries to take h at once; false if it must wait.
  bool try_take(Holder& h);
  void enqueue(Holder& h, std::coroutine_handle<> c);
  void unlock(Holder& h);

  IoLoop* loop_;
  List held_;
  List waiting_;
  int exclusive_held_ = 0;
};

inline auto RangeLock::lock(Holder& h, uint64_t begin, uint64_t end, bool exclusive) {
  h.lock_ = this;
  h.begin_ = begin;
  h.end_ = end;
  h.exclusive_ = exclusive;
  struct Awaiter {
    RangeLock* l;
    Holder* h;
    bool await_ready() { return l->try_take(*h); }
    void await_suspend(std::coroutine_handle<> c) { l->enqueue(*h, c); }
    void await_resume() const noexcept {}
  };
  return Awaiter{this, &h};
}

inline void RangeLock::Holder::release() {
  if (lock_) lock_->unlock(*this);
}

}  // namespace img
