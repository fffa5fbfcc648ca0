// IoLoop: one thread's event loop. Coroutines await io_uring operations (read, write, fsync,
// fallocate, poll) and are resumed when the completion arrives, so many requests are in flight at
// once on one thread. Operations prepared during one turn of the loop are submitted together.
//
// Where io_uring is unavailable (old kernel, seccomp), the loop falls back to running each file
// operation synchronously with the plain syscall; everything still works, just without overlap.
// A poll is not run inline (it could wait forever): it is parked, and the loop polls all parked
// descriptors together whenever it has nothing else to run, so coroutines waiting on different
// descriptors (one per virtio queue, say) are all served.
//
// Thread-safety: an IoLoop, and every coroutine it runs, belongs to the thread that calls run().
// The thread-safe entries are wake(), which interrupts a blocked run() from another thread, and
// post_remote(), which hands a coroutine back from another thread (a thread pool) to the loop.
#pragma once

#include <liburing.h>
#include <sys/uio.h>

#include <coroutine>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "img/status.h"
#include "img/task.h"

namespace img {

class IoLoop;

// One io_uring operation in flight; resumes its coroutine with the CQE's result (>= 0, or -errno).
class UringOp {
 public:
  enum class Kind { kRead, kWrite, kReadv, kWritev, kFsync, kFdatasync, kFallocate, kPoll, kNop };
  UringOp(IoLoop* loop, Kind kind, int fd) : loop_(loop), kind_(kind), fd_(fd) {}

  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h);
  int await_resume() const noexcept { return res_; }

  // Parameters (set by IoLoop's factory functions).
  void* buf = nullptr;
  const iovec* iov = nullptr;
  unsigned len = 0;  // bytes or iovec count
  uint64_t off = 0;
  uint64_t len64 = 0;  // fallocate length
  int mode = 0;        // fallocate mode, poll mask

 private:
  friend class IoLoop;
  int run_sync();  // fallback without a ring, for everything but kPoll
  IoLoop* loop_;
  Kind kind_;
  int fd_;
  int res_ = 0;
  std::coroutine_handle<> waiter_;
};

class IoLoop {
 public:
  struct Options {
    unsigned entries = 256;
    bool allow_sync_fallback = true;
    // Runs without io_uring even where it is available: for tests of the fallback.
    bool force_sync_fallback = false;
  };
  static Result<std::unique_ptr<IoLoop>> create(Options opts);
  static Result<std::unique_ptr<IoLoop>> create() { return create(Options{}); }
  ~IoLoop();
  IoLoop(const IoLoop&) = delete;
  IoLoop& operator=(const IoLoop&) = delete;

  bool has_uring() const { return has_ring_; }
  // The ring accepts only the operations this loop issues (IORING_REGISTER_RESTRICTIONS, Linux
  // 5.10): read, write, readv, writev, fsync, fallocate, poll_add and nop, no SQE flags, no
  // register calls. Operations submitted through io_uring do not pass seccomp, so a thread that
  // got hold of its ring still cannot open, connect or send through it. False on an older
  // kernel, or without a ring.
  bool uring_restricted() const { return restricted_; }
  // Why io_uring could not be used, if it could not.
  const std::string& uring_error() const { return uring_error_; }

  // Awaitables. Each returns the syscall-style result: >= 0 on success, -errno on failure.
  UringOp read(int fd, void* buf, unsigned len, uint64_t off);
  UringOp write(int fd, const void* buf, unsigned len, uint64_t off);
  UringOp readv(int fd, const iovec* iov, unsigned cnt, uint64_t off);
  UringOp writev(int fd, const iovec* iov, unsigned cnt, uint64_t off);
  UringOp fsync(int fd, bool datasync);
  UringOp fallocate(int fd, int mode, uint64_t off, uint64_t len);
  UringOp poll(int fd, unsigned events);  // resumes with the ready mask

  // Resume h at the next turn of the loop (never inline).
  void post(std::coroutine_handle<> h) { ready_.push_back(h); }
  // co_await loop.yield(): let other ready coroutines run first.
  auto yield() {
    struct Awaiter {
      IoLoop* loop;
      bool await_ready() const noexcept { return false; }
      void await_suspend(std::coroutine_handle<> h) { loop->post(h); }
      void await_resume() const noexcept {}
    };
    return Awaiter{this};
  }

  // Work on other threads. On the loop thread, before a coroutine suspends to wait for work done
  // elsewhere, call expect_remote(); the other thread then calls post_remote(h) exactly once,
  // which resumes h on the loop thread at its next turn. While such work is outstanding,
  // run_once(true) sleeps until it comes back instead of reporting that nothing is in flight.
  void expect_remote() { ++remote_pending_; }
  // Thread-safe.
  void post_remote(std::coroutine_handle<> h);

  // Starts t now and lets it run to completion in the background; the loop owns its frame.
  void spawn(Task<void> t);
  // Number of spawned tasks not yet finished.
  size_t spawned_running() const { return spawned_running_; }

  // Sync facade: runs the loop until t finishes and returns its result. Must not be called from
  // inside a coroutine running on this loop.
  template <class T>
  T run(Task<T> t) {
    auto h = t.handle();
    h.promise().continuation = nullptr;
    post(h);
    while (!h.done()) {
      if (!run_once(true) && !h.done()) deadlock();
    }
    return t.take_result();
  }

  // One turn: resume ready coroutines, submit prepared operations, and (if block and nothing is
  // ready) wait for at least one completion. Returns false if there was nothing to do at all.
  bool run_once(bool block);
  // Runs until no spawned task is left.
  void drain();
  // Thread-safe: makes a blocked run_once() return.
  void wake();

  // Internal, for UringOp.
  io_uring_sqe* get_sqe();
  void note_in_flight(int delta) { in_flight_ += delta; }
  void maybe_submit_early();

 private:
  IoLoop() = default;
  void reap();
  void submit();
  // Without a ring: the parked polls, and one poll(2) over them (see the file comment).
  friend class UringOp;
  void park(UringOp* op);
  bool poll_parked(bool block);
  // Moves coroutines posted by other threads to ready_ (loop thread).
  void take_remote();
  [[noreturn]] void deadlock();
  // Below this many operations in the kernel, a new one is submitted at once (maybe_submit_early).
  static constexpr int kEarlySubmitBelow = 8;

  io_uring ring_{};
  bool has_ring_ = false;
  bool restricted_ = false;
  std::string uring_error_;
  std::deque<std::coroutine_handle<>> ready_;
  int in_flight_ = 0;         // operations awaited by coroutines (prepared or submitted)
  int kernel_in_flight_ = 0;  // submitted to the kernel and not yet reaped
  size_t spawned_running_ = 0;
  int wake_fd_ = -1;
  uint64_t wake_buf_ = 0;
  bool wake_armed_ = false;
  std::vector<UringOp*> parked_;
  size_t remote_pending_ = 0;  // expect_remote() calls not yet answered (loop thread only)
  std::mutex remote_mu_;
  std::vector<std::coroutine_handle<>> remote_;  // guarded by remote_mu_
};

}  // namespace img
