// QueueServer: the virtqueue service loop every virtio device shares (crosvm's and Cloud
// Hypervisor's devices share theirs the same way). It owns one I/O thread that runs an
// img::IoLoop: one coroutine per queue waits on the queue's notification eventfd, drains the avail
// ring with notifications suppressed (§2.7.7, §2.7.10), reads and validates each chain
// (Virtqueue::read_chain) and hands it to the device's ChainHandler. The handler completes each
// chain exactly once, now or later from a coroutine on the same loop; completions are written to
// the used ring as they come and published once per loop turn, with at most one interrupt per
// queue per turn (EVENT_IDX / NO_INTERRUPT suppression applied by Virtqueue::publish_used).
//
// Errors: a chain that fails validation, or that the handler refuses (an error Status), is
// returned with used length 0 and logged (rate-limited); a broken ring stops its queue and asks
// the transport for DEVICE_NEEDS_RESET (§2.1.1).
//
// stop() (device reset, §2.4): sets the stop flag, wakes every waiter (queue eventfds and the
// stop eventfd that wait() watches), calls ChainHandler::stopping() on the server thread so the
// handler can drop the chains it parked (waiting for input or for rate tokens), lets the chains
// already running on the loop finish (drain), and returns only when the thread has exited: after
// stop() nothing touches guest memory.
//
// pause() (VM pause): stops taking chains off the avail rings, runs ChainHandler::quiesce() on the
// server thread (blk waits for its requests in flight and flushes the disk) and returns its
// status; resume() takes chains again, the ones made available meanwhile included. Chains a
// handler parked (console input, rng tokens) stay parked and may still complete while paused.
//
// run_quiesced(op) (a disk resize under a running guest): pauses as above unless paused
// already, runs op on the server thread, which then has the loop and the backend to itself with
// no chain in flight, and resumes unless the server was paused before; the caller blocks until
// op is done.
//
// Thread-safety: start()/stop()/pause()/resume() from the owning (transport) thread. Everything
// else, handler callbacks included, runs on the server thread, which has the loop to itself while
// it runs.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "img/io_loop.h"
#include "virtio/virtio_device.h"

namespace vmm::virtio {

class QueueServer;

// What a device supplies: "handle this chain". All methods run on the server thread.
class ChainHandler {
 public:
  virtual ~ChainHandler() = default;
  // Once, before the first chain: spawn the device's own coroutines on server.loop().
  virtual void started(QueueServer& server) { (void)server; }
  // A validated chain from queue `queue` (the driver's queue number). On success the handler
  // owns it and calls server.complete(queue, chain.head, len) exactly once, now or later. An
  // error means the chain was refused and not kept: the server completes it with used length 0.
  virtual img::Status handle_chain(uint16_t queue, DescriptorChain chain) = 0;
  // stop() was called: drop (never complete) the chains the handler parked and let its own
  // coroutines end. Chains already running on the loop may still complete until they finish.
  virtual void stopping() {}
  // pause(): no new chains come; make the device quiet. The default leaves parked chains parked.
  virtual img::Task<img::Status> quiesce() { co_return img::Status{}; }
};

// A one-waiter wake-up for coroutines on one loop: co_await ev.wait() suspends until notify().
// A notify() with no waiter is remembered for the next wait().
class LoopEvent {
 public:
  explicit LoopEvent(img::IoLoop& loop) : loop_(loop) {}
  void notify();
  auto wait() {
    struct Awaiter {
      LoopEvent* ev;
      bool await_ready() const noexcept { return ev->pending_; }
      void await_suspend(std::coroutine_handle<> h) { ev->waiter_ = h; }
      void await_resume() const noexcept { ev->pending_ = false; }
    };
    return Awaiter{this};
  }

 private:
  img::IoLoop& loop_;
  std::coroutine_handle<> waiter_;
  bool pending_ = false;
};

class QueueServer {
 public:
  // name prefixes log lines ("virtio-blk"). loop, irq and handler must outlive the server.
  QueueServer(std::string name, img::IoLoop& loop, std::vector<ActiveQueue> queues,
              VirtioInterrupt& irq, ChainHandler& handler);
  ~QueueServer();
  QueueServer(const QueueServer&) = delete;
  QueueServer& operator=(const QueueServer&) = delete;

  img::Status start();
  void stop();
  img::Status pause();
  void resume();
  // From the owning thread, like pause(). op's status, or an error without running it when the
  // server is not running, the pause failed, or the server stopped first.
  img::Status run_quiesced(std::function<img::Task<img::Status>()> op);

  // Server thread only.
  img::IoLoop& loop() { return loop_; }
  bool stopping() const { return stopping_.load(std::memory_order_acquire); }
  // Returns a chain to the driver with `len` bytes written into its writable buffers.
  void complete(uint16_t queue, uint16_t head, uint32_t len);
  // Stops serving `queue` and asks the transport for DEVICE_NEEDS_RESET.
  void fail_queue(uint16_t queue, const std::string& why);
  // Waits until fd is ready for `events` (POLLIN / POLLOUT) or the server is stopping; true if
  // ready. fd < 0 waits for stop only. A regular file (which epoll refuses) is always ready.
  img::Task<bool> wait(int fd, unsigned events);
  // Sleeps for d, or until the server is stopping; true if the full time passed.
  img::Task<bool> sleep_for(std::chrono::nanoseconds d);
  // Chains handed to the handler and not yet completed (for tests and stop accounting).
  size_t in_flight() const { return in_flight_; }
  // Waits until no chain is in flight (for a handler's quiesce()).
  img::Task<void> wait_idle();
  bool paused() const { return paused_.load(std::memory_order_acquire); }

  // Rate-limited log line for errors a guest can provoke at will.
  void log_guest_error(const char* fmt, ...) __attribute__((format(printf, 2, 3)));

 private:
  struct QueueCtx {
    ActiveQueue aq;
    bool publish_scheduled = false;
    bool broken = false;
  };
  void thread_main();
  img::Task<void> serve_queue(QueueCtx& q);
  img::Task<void> watch_stop();
  img::Task<void> watch_pause();
  void finish_pause(img::Status s);
  img::Task<void> run_pending_op();
  void finish_op(img::Status s);
  void drain_avail(QueueCtx& q);
  void handle_head(QueueCtx& q, uint16_t head);
  img::Task<void> publish_later(QueueCtx& q);
  QueueCtx* find(uint16_t queue);

  const std::string name_;
  img::IoLoop& loop_;
  VirtioInterrupt& irq_;
  ChainHandler& handler_;
  std::vector<std::unique_ptr<QueueCtx>> queues_;  // stable addresses for the coroutines
  std::vector<QueueCtx*> by_index_;                // driver queue number -> context
  int stop_fd_ = -1;                               // eventfd, signalled once by stop()
  size_t in_flight_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> paused_{false};
  int pause_fd_ = -1;  // eventfd: pause() or resume() was asked
  LoopEvent idle_;     // notified when in_flight_ drops to 0
  std::mutex pause_mu_;
  std::condition_variable pause_cv_;
  std::optional<img::Status> pause_result_;  // guarded by pause_mu_
  // run_quiesced's operation and result, guarded by pause_mu_; watch_ended_: no one is left on
  // the server thread to run an operation.
  std::function<img::Task<img::Status>()> op_;
  bool op_pending_ = false;
  std::optional<img::Status> op_result_;
  bool watch_ended_ = false;
  std::atomic<uint64_t> logged_{0};
  std::thread thread_;
};

}  // namespace vmm::virtio
