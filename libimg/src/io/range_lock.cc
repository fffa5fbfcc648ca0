#include "io/range_lock.h"

namespace img {

void RangeLock::List::push_back(Holder* h) {
  h->prev_ = tail;
  h->next_ = nullptr;
  if (tail) {
    tail->next_ = h;
  } else {
    head = h;
  }
  tail = h;
}

void RangeLock::List::erase(Holder* h) {
  if (h->prev_) {
    h->prev_->next_ = h->next_;
  } else {
    head = h->next_;
  }
  if (h->next_) {
    h->next_->prev_ = h->prev_;
  } else {
    tail = h->prev_;
  }
  h->prev_ = h->next_ = nullptr;
}

bool RangeLock::grantable(const Holder& h) const {
  // Held ranges: a shared request conflicts only with exclusive ones.
  if (h.exclusive_ || exclusive_held_ > 0) {
    for (const Holder* o = held_.head; o; o = o->next_) {
      if ((h.exclusive_ || o->exclusive_) && overlap(h, *o)) return false;
    }
  }
  // Earlier waiters that h overlaps go first (h itself, if waiting, ends the scan), so an
  // exclusive request is not passed by later shared ones and never starves.
  for (const Holder* o = waiting_.head; o && o != &h; o = o->next_) {
    if ((h.exclusive_ || o->exclusive_) && overlap(h, *o)) return false;
  }
  return true;
}

bool RangeLock::try_take(Holder& h) {
  // The fast path: nothing exclusive anywhere, so a shared request conflicts with nobody.
  bool free = !h.exclusive_ && exclusive_held_ == 0 && waiting_.empty();
  if (!free && !grantable(h)) return false;
  held_.push_back(&h);
  if (h.exclusive_) ++exclusive_held_;
  return true;
}

void RangeLock::enqueue(Holder& h, std::coroutine_handle<> c) {
  h.waiting_ = true;
  h.waiter_ = c;
  waiting_.push_back(&h);
}

void RangeLock::unlock(Holder& h) {
  h.lock_ = nullptr;
  if (h.waiting_) {  // the waiting coroutine was destroyed: it held nothing
    h.waiting_ = false;
    waiting_.erase(&h);
  } else {
    held_.erase(&h);
    if (h.exclusive_) --exclusive_held_;
  }
  // Grant, in order, every waiter that no longer conflicts. Resumed through the loop, never
  // inline, so the releaser's stack does not run someone else's I/O.
  for (Holder* w = waiting_.head; w;) {
    Holder* next = w->next_;
    if (grantable(*w)) {
      waiting_.erase(w);
      w->waiting_ = false;
      held_.push_back(w);
      if (w->exclusive_) ++exclusive_held_;
      loop_->post(w->waiter_);
    }
    w = next;
  }
}

}  // namespace img
