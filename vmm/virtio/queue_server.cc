#include "virtio/queue_server.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "security/seccomp.h"
#include "security/thread_spawner.h"

namespace vmm::virtio {

void LoopEvent::notify() {
  if (waiter_) {
    auto h = waiter_;
    waiter_ = nullptr;
    pending_ = true;  // consumed by await_resume
    loop_.post(h);
  } else {
    pending_ = true;
  }
}

QueueServer::QueueServer(std::string name, img::IoLoop& loop, std::vector<ActiveQueue> queues,
                         VirtioInterrupt& irq, ChainHandler& handler)
    : name_(std::move(name)), loop_(loop), irq_(irq), handler_(handler), idle_(loop) {
  for (auto& aq : queues) {
    queues_.push_back(std::make_unique<QueueCtx>(QueueCtx{std::move(aq)}));
    uint16_t i = queues_.back()->aq.index;
    if (by_index_.size() <= i) by_index_.resize(i + 1u, nullptr);
    by_index_[i] = queues_.back().get();
  }
}

QueueServer::~QueueServer() {
  stop();
  if (stop_fd_ >= 0) ::close(stop_fd_);
  if (pause_fd_ >= 0) ::close(pause_fd_);
}

img::Status QueueServer::start() {
  if (thread_.joinable()) return {};
  if (stop_fd_ < 0) {
    stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (stop_fd_ < 0) return img::io_error(errno, name_ + ": eventfd");
  }
  if (pause_fd_ < 0) {
    pause_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (pause_fd_ < 0) return img::io_error(errno, name_ + ": eventfd");
  }
  stopping_.store(false);
  paused_.store(false);
  {
    std::lock_guard lock(pause_mu_);
    watch_ended_ = false;
    op_pending_ = false;
  }
  // On a vCPU thread (DRIVER_OK), the spawner creates it: vCPUs may not clone (seccomp.h).
  ASSIGN_OR_RETURN(thread_, security::spawn_thread([this] { thread_main(); }));
  return {};
}

void QueueServer::stop() {
  if (!thread_.joinable()) return;
  stopping_.store(true, std::memory_order_release);
  uint64_t one = 1;
  // The stop eventfd stays readable from now on: every wait() and watch_stop() sees it. The queue
  // eventfds are what the queue coroutines sleep on; a kick wakes them to see the flag.
  (void)!::write(stop_fd_, &one, sizeof one);
  for (auto& q : queues_) (void)!::write(q->aq.kick_fd, &one, sizeof one);
  (void)!::write(pause_fd_, &one, sizeof one);
  loop_.wake();
  thread_.join();
}

img::Status QueueServer::pause() {
  if (!thread_.joinable() || stopping() || paused()) return {};
  {
    std::lock_guard lock(pause_mu_);
    pause_result_.reset();
  }
  paused_.store(true, std::memory_order_release);
  uint64_t one = 1;
  (void)!::write(pause_fd_, &one, sizeof one);
  loop_.wake();
  std::unique_lock lock(pause_mu_);
  pause_cv_.wait(lock, [this] { return pause_result_.has_value(); });
  return *pause_result_;
}

void QueueServer::resume() {
  if (!thread_.joinable() || !paused()) return;
  paused_.store(false, std::memory_order_release);
  uint64_t one = 1;
  (void)!::write(pause_fd_, &one, sizeof one);
  loop_.wake();
}

img::Status QueueServer::run_quiesced(std::function<img::Task<img::Status>()> op) {
  if (!thread_.joinable() || stopping()) {
    return img::make_error(img::ErrorCode::kInvalidArgument, name_ + ": the device is not running");
  }
  const bool was_paused = paused();
  if (!was_paused) {
    if (img::Status s = pause(); !s) {
      resume();
      return s;
    }
  }
  {
    std::lock_guard lock(pause_mu_);
    if (watch_ended_) {
      return img::make_error(img::ErrorCode::kInvalidArgument, name_ + ": the device was reset");
    }
    op_ = std::move(op);
    op_pending_ = true;
    op_result_.reset();
  }
  uint64_t one = 1;
  (void)!::write(pause_fd_, &one, sizeof one);
  loop_.wake();
  img::Status result;
  {
    std::unique_lock lock(pause_mu_);
    pause_cv_.wait(lock, [this] { return op_result_.has_value(); });
    result = std::move(*op_result_);
    op_ = nullptr;
  }
  if (!was_paused) resume();
  return result;
}

img::Task<void> QueueServer::run_pending_op() {
  std::function<img::Task<img::Status>()>* op = nullptr;
  {
    std::lock_guard lock(pause_mu_);
    if (!op_pending_) co_return;
    op_pending_ = false;
    op = &op_;  // stays put: run_quiesced clears it only after the result
  }
  img::Status s = co_await (*op)();
  finish_op(std::move(s));
}

void QueueServer::finish_op(img::Status s) {
  {
    std::lock_guard lock(pause_mu_);
    op_pending_ = false;
    op_result_ = std::move(s);
  }
  pause_cv_.notify_all();
}

void QueueServer::finish_pause(img::Status s) {
  {
    std::lock_guard lock(pause_mu_);
    if (pause_result_) return;
    pause_result_ = std::move(s);
  }
  pause_cv_.notify_all();
}

img::Task<void> QueueServer::watch_pause() {
  bool quiesced = false;
  while (!stopping()) {
    int r = co_await loop_.poll(pause_fd_, POLLIN);
    if (r < 0) break;
    uint64_t count;
    (void)!::read(pause_fd_, &count, sizeof count);
    if (stopping()) break;
    if (paused() && !quiesced) {
      quiesced = true;
      img::Status s = co_await handler_.quiesce();
      finish_pause(std::move(s));
    } else if (!paused() && quiesced) {
      quiesced = false;
      for (auto& q : queues_) drain_avail(*q);  // what the driver made available meanwhile
    }
    if (quiesced) co_await run_pending_op();
  }
  finish_pause(img::Status{});  // a pause() racing a stop() must not wait forever
  bool pending;
  {
    std::lock_guard lock(pause_mu_);
    watch_ended_ = true;
    pending = op_pending_;
  }
  if (pending) {
    finish_op(img::make_error(img::ErrorCode::kInvalidArgument, name_ + ": the device was reset"));
  }
}

img::Task<void> QueueServer::wait_idle() {
  while (in_flight_ > 0) co_await idle_.wait();
}

void QueueServer::thread_main() {
  if (auto s = security::enter_thread(security::ThreadKind::kDevice, name_); !s) {
    // No unfiltered device thread: the device stays dead and the driver is told to reset.
    for (auto& q : queues_) fail_queue(q->aq.index, s.error().to_string());
    return;
  }
  handler_.started(*this);  // before the first chain: spawn() runs a coroutine at once
  loop_.spawn(watch_stop());
  loop_.spawn(watch_pause());
  for (auto& q : queues_) loop_.spawn(serve_queue(*q));
  // Runs until every coroutine (queue servers, handler coroutines, requests in flight) is done.
  while (loop_.spawned_running() > 0) loop_.run_once(true);
}

img::Task<void> QueueServer::watch_stop() {
  while (!stopping()) {
    int r = co_await loop_.poll(stop_fd_, POLLIN);
    if (r < 0) break;
  }
  handler_.stopping();
}

img::Task<void> QueueServer::serve_queue(QueueCtx& q) {
  drain_avail(q);  // buffers made available before the first notification
  while (!stopping()) {
    int r = co_await loop_.poll(q.aq.kick_fd, POLLIN);
    if (r < 0) {
      log_guest_error("queue %u: poll on notification eventfd: %s", q.aq.index, strerror(-r));
      break;
    }
    uint64_t count;
    (void)!::read(q.aq.kick_fd, &count, sizeof count);
    if (stopping()) break;
    drain_avail(q);  // does nothing while paused: resume() drains
  }
}

void QueueServer::drain_avail(QueueCtx& q) {
  Virtqueue& vq = q.aq.queue;
  while (!q.broken && !stopping() && !paused()) {
    vq.disable_notifications();
    while (!q.broken && !paused()) {
      auto head = vq.pop_avail();
      if (!head) {
        fail_queue(q.aq.index, head.error().to_string());
        return;
      }
      if (!*head) break;
      handle_head(q, **head);
    }
    if (!vq.enable_notifications()) return;
  }
}

void QueueServer::handle_head(QueueCtx& q, uint16_t head) {
  ++in_flight_;  // complete() takes it back, whichever path completes the chain
  auto chain = q.aq.queue.read_chain(head);
  if (!chain) {
    log_guest_error("queue %u: chain %u dropped: %s", q.aq.index, head,
                    chain.error().to_string().c_str());
    complete(q.aq.index, head, 0);
    return;
  }
  img::Status s = handler_.handle_chain(q.aq.index, std::move(*chain));
  if (!s) {
    log_guest_error("queue %u: chain %u refused: %s", q.aq.index, head,
                    s.error().to_string().c_str());
    complete(q.aq.index, head, 0);
  }
}

QueueServer::QueueCtx* QueueServer::find(uint16_t queue) {
  return queue < by_index_.size() ? by_index_[queue] : nullptr;
}

void QueueServer::complete(uint16_t queue, uint16_t head, uint32_t len) {
  QueueCtx* q = find(queue);
  if (!q) return;
  if (in_flight_ > 0 && --in_flight_ == 0) idle_.notify();
  if (q->broken) return;  // the driver must reset; the ring is not ours to write any more
  q->aq.queue.add_used(head, len);
  if (!q->publish_scheduled) {
    q->publish_scheduled = true;
    loop_.spawn(publish_later(*q));
  }
}

img::Task<void> QueueServer::publish_later(QueueCtx& q) {
  // Runs on the next turn of the loop, after every completion that arrived with this one.
  co_await loop_.yield();
  q.publish_scheduled = false;
  if (q.broken) co_return;
  if (q.aq.queue.publish_used()) irq_.signal_used(q.aq.index);
}

void QueueServer::fail_queue(uint16_t queue, const std::string& why) {
  QueueCtx* q = find(queue);
  if (!q || q->broken) return;
  q->broken = true;
  irq_.device_error(img::strfmt("%s queue %u: %s", name_.c_str(), queue, why.c_str()));
}

img::Task<bool> QueueServer::wait(int fd, unsigned events) {
  if (stopping()) co_return false;
  // One epoll set over fd and the stop eventfd: loop.poll waits on one descriptor, and a wait on
  // a console's input must end when the device resets.
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) co_return false;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = stop_fd_;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, stop_fd_, &ev);
  if (fd >= 0) {
    ev.events = events;
    ev.data.fd = fd;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 && errno == EPERM) {
      ::close(ep);  // a regular file: always ready
      co_return true;
    }
  }
  int r = co_await loop_.poll(ep, POLLIN);
  ::close(ep);
  co_return r >= 0 && !stopping();
}

img::Task<bool> QueueServer::sleep_for(std::chrono::nanoseconds d) {
  if (d.count() <= 0) co_return !stopping();
  int tfd = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (tfd < 0) co_return false;
  itimerspec its{};
  its.it_value.tv_sec = static_cast<time_t>(d.count() / 1000000000);
  its.it_value.tv_nsec = static_cast<long>(d.count() % 1000000000);
  ::timerfd_settime(tfd, 0, &its, nullptr);
  bool ok = co_await wait(tfd, POLLIN);
  ::close(tfd);
  co_return ok;
}

void QueueServer::log_guest_error(const char* fmt, ...) {
  // The first 100 lines, then one in 10000: a hostile guest must not flood the log.
  uint64_t n = logged_.fetch_add(1);
  if (n >= 100 && n % 10000 != 0) return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "%s: %s%s\n", name_.c_str(), buf, n >= 100 ? " (rate limited)" : "");
}

}  // namespace vmm::virtio
