// Task<T>: a lazily started C++20 coroutine that yields one value of type T to whoever awaits it.
// Awaiting a Task starts it; when it finishes it resumes its awaiter by symmetric transfer, so
// chains of awaits do not grow the stack. A Task owns its coroutine frame.
//
// Thread-safety: a Task and everything it awaits run on one IoLoop thread.
#pragma once

#include <coroutine>
#include <cstdlib>
#include <exception>
#include <optional>
#include <utility>

namespace img {

template <class T>
class Task;

namespace detail {

struct FinalAwaiter {
  bool await_ready() noexcept { return false; }
  template <class P>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
    auto c = h.promise().continuation;
    return c ? c : std::noop_coroutine();
  }
  void await_resume() noexcept {}
};

struct PromiseBase {
  std::coroutine_handle<> continuation;
  std::suspend_always initial_suspend() noexcept { return {}; }
  FinalAwaiter final_suspend() noexcept { return {}; }
  // libimg reports errors as values; an exception escaping a coroutine is a bug.
  void unhandled_exception() noexcept { std::terminate(); }
};

// What Task<T> and Task<void> share: ownership of the frame, and awaiting it.
template <class Promise>
class TaskBase {
 public:
  TaskBase() = default;
  TaskBase(TaskBase&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  TaskBase& operator=(TaskBase&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  ~TaskBase() {
    if (h_) h_.destroy();
  }

  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiter) noexcept {
    h_.promise().continuation = awaiter;
    return h_;
  }

  // For IoLoop: the raw handle.
  std::coroutine_handle<Promise> handle() const { return h_; }
  bool done() const { return h_ && h_.done(); }

 protected:
  explicit TaskBase(std::coroutine_handle<Promise> h) : h_(h) {}
  std::coroutine_handle<Promise> h_;
};

}  // namespace detail

template <class T>
struct TaskPromise : detail::PromiseBase {
  std::optional<T> value;
  Task<T> get_return_object();
  template <class U>
  void return_value(U&& v) {
    value.emplace(std::forward<U>(v));
  }
};

template <>
struct TaskPromise<void> : detail::PromiseBase {
  Task<void> get_return_object();
  void return_void() {}
};

template <class T>
class [[nodiscard]] Task : public detail::TaskBase<TaskPromise<T>> {
  using Base = detail::TaskBase<TaskPromise<T>>;

 public:
  using promise_type = TaskPromise<T>;
  Task() = default;
  explicit Task(std::coroutine_handle<promise_type> h) : Base(h) {}

  T await_resume() { return std::move(*this->h_.promise().value); }
  // The result once done (the sync facade).
  T take_result() { return std::move(*this->h_.promise().value); }
};

template <>
class [[nodiscard]] Task<void> : public detail::TaskBase<TaskPromise<void>> {
  using Base = detail::TaskBase<TaskPromise<void>>;

 public:
  using promise_type = TaskPromise<void>;
  Task() = default;
  explicit Task(std::coroutine_handle<promise_type> h) : Base(h) {}

  void await_resume() {}
  void take_result() {}
};

template <class T>
Task<T> TaskPromise<T>::get_return_object() {
  return Task<T>(std::coroutine_handle<TaskPromise<T>>::from_promise(*this));
}
inline Task<void> TaskPromise<void>::get_return_object() {
  return Task<void>(std::coroutine_handle<TaskPromise<void>>::from_promise(*this));
}

}  // namespace img
