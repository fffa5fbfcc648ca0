#include "img/io_loop.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "io/uring_restrictions.h"

namespace img {

namespace {

// A fire-and-forget coroutine that owns a Task<void> and frees itself when done.
struct Detached {
  struct promise_type {
    Detached get_return_object() { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
};

Detached run_detached(Task<void> t, size_t* running) {
  co_await t;
  --*running;
}

}  // namespace

Result<std::unique_ptr<IoLoop>> IoLoop::create(Options opts) {
  std::unique_ptr<IoLoop> loop(new IoLoop());
  if (opts.force_sync_fallback) {
    loop->uring_error_ = "io_uring not used (IoLoop::Options::force_sync_fallback)";
  } else {
    int r = init_restricted_ring(opts.entries, &loop->ring_);
    if (r == 0) {
      loop->has_ring_ = loop->restricted_ = true;
    } else {
      io_uring_params p{};
      r = io_uring_queue_init_params(opts.entries, &loop->ring_, &p);
    }
    if (r == 0) {
      loop->has_ring_ = true;
    } else {
      loop->uring_error_ = strfmt("io_uring_queue_init: %s", strerror(-r));
      if (!opts.allow_sync_fallback) return io_error(-r, "io_uring_queue_init");
    }
  }
  loop->wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (loop->wake_fd_ < 0) return io_error(errno, "eventfd");
  return loop;
}

IoLoop::~IoLoop() {
  if (has_ring_) io_uring_queue_exit(&ring_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

void IoLoop::deadlock() {
  std::fprintf(stderr, "img::IoLoop::run: the task waits but nothing is in flight (deadlock)\n");
  std::abort();
}

io_uring_sqe* IoLoop::get_sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (!sqe) {
    // Ring full: hand what we have to the kernel and try again.
    submit();
    sqe = io_uring_get_sqe(&ring_);
    if (!sqe) reap();
  }
  return sqe;
}

bool UringOp::await_suspend(std::coroutine_handle<> h) {
  if (!loop_->has_uring()) {
    if (kind_ == Kind::kPoll) {
      waiter_ = h;
      loop_->park(this);
      return true;
    }
    res_ = run_sync();
    return false;  // completed inline
  }
  waiter_ = h;
  io_uring_sqe* sqe = loop_->get_sqe();
  switch (kind_) {
    case Kind::kRead:
      io_uring_prep_read(sqe, fd_, buf, len, off);
      break;
    case Kind::kWrite:
      io_uring_prep_write(sqe, fd_, buf, len, off);
      break;
    case Kind::kReadv:
      io_uring_prep_readv(sqe, fd_, iov, len, off);
      break;
    case Kind::kWritev:
      io_uring_prep_writev(sqe, fd_, iov, len, off);
      break;
    case Kind::kFsync:
      io_uring_prep_fsync(sqe, fd_, 0);
      break;
    case Kind::kFdatasync:
      io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC);
      break;
    case Kind::kFallocate:
      io_uring_prep_fallocate(sqe, fd_, mode, off, len64);
      break;
    case Kind::kPoll:
      io_uring_prep_poll_add(sqe, fd_, mode);
      break;
    case Kind::kNop:
      io_uring_prep_nop(sqe);
      break;
  }
  io_uring_sqe_set_data(sqe, this);
  loop_->note_in_flight(1);
  loop_->maybe_submit_early();
  return true;
}

int UringOp::run_sync() {
  ssize_t r = 0;
  switch (kind_) {
    case Kind::kRead:
      r = pread(fd_, buf, len, off);
      break;
    case Kind::kWrite:
      r = pwrite(fd_, buf, len, off);
      break;
    case Kind::kReadv:
      r = preadv(fd_, iov, len, off);
      break;
    case Kind::kWritev:
      r = pwritev(fd_, iov, len, off);
      break;
    case Kind::kFsync:
      r = ::fsync(fd_);
      break;
    case Kind::kFdatasync:
      r = ::fdatasync(fd_);
      break;
    case Kind::kFallocate:
      r = ::fallocate(fd_, mode, off, len64);
      break;
    case Kind::kPoll:  // parked instead (IoLoop::poll_parked)
      errno = EINVAL;
      r = -1;
      break;
    case Kind::kNop:
      r = 0;
      break;
  }
  return r < 0 ? -errno : static_cast<int>(r);
}

UringOp IoLoop::read(int fd, void* buf, unsigned len, uint64_t off) {
  UringOp op(this, UringOp::Kind::kRead, fd);
  op.buf = buf;
  op.len = len;
  op.off = off;
  return op;
}
UringOp IoLoop::write(int fd, const void* buf, unsigned len, uint64_t off) {
  UringOp op(this, UringOp::Kind::kWrite, fd);
  op.buf = const_cast<void*>(buf);
  op.len = len;
  op.off = off;
  return op;
}
UringOp IoLoop::readv(int fd, const iovec* iov, unsigned cnt, uint64_t off) {
  UringOp op(this, UringOp::Kind::kReadv, fd);
  op.iov = iov;
  op.len = cnt;
  op.off = off;
  return op;
}
UringOp IoLoop::writev(int fd, const iovec* iov, unsigned cnt, uint64_t off) {
  UringOp op(this, UringOp::Kind::kWritev, fd);
  op.iov = iov;
  op.len = cnt;
  op.off = off;
  return op;
}
UringOp IoLoop::fsync(int fd, bool datasync) {
  return UringOp(this, datasync ? UringOp::Kind::kFdatasync : UringOp::Kind::kFsync, fd);
}
UringOp IoLoop::fallocate(int fd, int mode, uint64_t off, uint64_t len) {
  UringOp op(this, UringOp::Kind::kFallocate, fd);
  op.mode = mode;
  op.off = off;
  op.len64 = len;
  return op;
}
UringOp IoLoop::poll(int fd, unsigned events) {
  UringOp op(this, UringOp::Kind::kPoll, fd);
  op.mode = static_cast<int>(events);
  return op;
}

void IoLoop::spawn(Task<void> t) {
  ++spawned_running_;
  run_detached(std::move(t), &spawned_running_);
}

void IoLoop::reap() {
  io_uring_cqe* cqe;
  unsigned head;
  unsigned n = 0;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    ++n;
    void* data = io_uring_cqe_get_data(cqe);
    if (data == &wake_buf_) {
      wake_armed_ = false;
      continue;
    }
    auto* op = static_cast<UringOp*>(data);
    op->res_ = cqe->res;
    --in_flight_;
    ready_.push_back(op->waiter_);
  }
  io_uring_cq_advance(&ring_, n);
  kernel_in_flight_ -= std::min<int>(kernel_in_flight_, n);
}

void IoLoop::post_remote(std::coroutine_handle<> h) {
  {
    std::lock_guard<std::mutex> lock(remote_mu_);
    remote_.push_back(h);
  }
  wake();
}

void IoLoop::take_remote() {
  if (remote_pending_ == 0) return;
  std::lock_guard<std::mutex> lock(remote_mu_);
  for (auto h : remote_) ready_.push_back(h);
  remote_pending_ -= std::min(remote_pending_, remote_.size());
  remote_.clear();
}

bool IoLoop::run_once(bool block) {
  bool did = false;
  take_remote();
  // Resume only what was ready at the start of this turn; what they post runs next turn, after
  // their I/O has been submitted.
  size_t n = ready_.size();
  for (size_t i = 0; i < n; ++i) {
    auto h = ready_.front();
    ready_.pop_front();
    h.resume();
    did = true;
  }
  if (!has_ring_) {
    // Without a ring every file operation completed inline: what can still be pending is a
    // parked poll or a coroutine another thread will post back (both wake the same fd).
    if (!parked_.empty()) {
      bool r = poll_parked(block && ready_.empty());
      take_remote();
      return r || did || !ready_.empty();
    }
    if (block && !did && ready_.empty() && remote_pending_ > 0) {
      uint64_t v;
      ssize_t r = ::read(wake_fd_, &v, sizeof v);
      (void)r;
      take_remote();
      return true;
    }
    return did || !ready_.empty();
  }
  if (block && ready_.empty()) {
    if (in_flight_ == 0 && remote_pending_ == 0) {
      submit();
      reap();
      return did;
    }
    if (!wake_armed_) {
      io_uring_sqe* sqe = get_sqe();
      io_uring_prep_read(sqe, wake_fd_, &wake_buf_, sizeof wake_buf_, 0);
      io_uring_sqe_set_data(sqe, &wake_buf_);
      wake_armed_ = true;
    }
    int r = io_uring_submit_and_wait(&ring_, 1);
    if (r > 0) kernel_in_flight_ += r;
  } else {
    submit();
  }
  reap();
  take_remote();
  return true;
}

void IoLoop::park(UringOp* op) {
  parked_.push_back(op);
  ++in_flight_;
}

bool IoLoop::poll_parked(bool block) {
  if (parked_.empty()) return false;
  std::vector<pollfd> fds;
  fds.reserve(parked_.size() + 1);
  for (UringOp* op : parked_) fds.push_back({op->fd_, static_cast<short>(op->mode), 0});
  // wake() must interrupt a blocked wait, as it does the ring's.
  fds.push_back({wake_fd_, POLLIN, 0});
  int r = ::poll(fds.data(), fds.size(), block ? -1 : 0);
  if (r < 0 && errno == EINTR) return true;
  int err = r < 0 ? errno : 0;  // ENOMEM, say: every parked poll fails with it, as a CQE would
  if (fds.back().revents & POLLIN) {
    uint64_t v;
    ssize_t n = ::read(wake_fd_, &v, sizeof v);
    (void)n;
  }
  size_t kept = 0;
  for (size_t i = 0; i < parked_.size(); ++i) {
    UringOp* op = parked_[i];
    short rev = fds[i].revents;
    if (!err && rev == 0) {
      parked_[kept++] = op;
      continue;
    }
    // io_uring refuses a bad descriptor with -EBADF; poll(2) reports it as POLLNVAL.
    op->res_ = err ? -err : (rev & POLLNVAL) ? -EBADF : rev;
    --in_flight_;
    ready_.push_back(op->waiter_);
  }
  parked_.resize(kept);
  return true;
}

void IoLoop::maybe_submit_early() {
  // While the kernel has little to do, hand it new work at once instead of at the end of the
  // turn: a batch of completions processed as one and resubmitted as one keeps arriving as one
  // (a convoy), and the device idles while we process it. Above the mark, batch as usual.
  if (kernel_in_flight_ < kEarlySubmitBelow) submit();
}

void IoLoop::submit() {
  int r = io_uring_submit(&ring_);
  if (r > 0) kernel_in_flight_ += r;
}

void IoLoop::drain() {
  while (spawned_running_ > 0) {
    if (!run_once(true) && spawned_running_ > 0) deadlock();
  }
}

void IoLoop::wake() {
  uint64_t one = 1;
  ssize_t r = ::write(wake_fd_, &one, sizeof one);
  (void)r;
}

}  // namespace img
