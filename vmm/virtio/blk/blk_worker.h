// BlkWorker: the virtio-blk I/O thread. It owns the turn of an img::IoLoop: one coroutine per
// queue waits on the queue's notification eventfd (loop.poll), drains the avail ring, and spawns
// one coroutine per request, so every request the driver posted is in flight at once on io_uring.
// Data moves between the image and guest memory directly (iovecs into guest RAM, no bounce
// copy). Completions are written to the used ring as they finish and published once per loop
// turn, with at most one interrupt per queue per turn (§2.7.10 suppression applied).
//
// A chain that fails validation is returned with used length 0 (or an IOERR/UNSUPP status when
// its status byte is usable) and logged; a broken ring stops its queue and asks the transport for
// DEVICE_NEEDS_RESET. stop() sets a flag and signals every queue eventfd to wake the thread, which
// then lets the requests in flight finish before it exits.
//
// Thread-safety: start()/stop() from the owning (transport) thread; everything else runs on the
// worker thread, which has the loop and the driver to itself while it runs.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "img/block_driver.h"
#include "img/io_loop.h"
#include "virtio/blk/request.h"
#include "virtio/virtio_device.h"

namespace vmm::virtio::blk {

class BlkWorker {
 public:
  BlkWorker(img::IoLoop& loop, img::BlockDriver& disk, const Limits& limits, std::string serial,
            std::vector<ActiveQueue> queues, VirtioInterrupt& irq);
  ~BlkWorker();
  BlkWorker(const BlkWorker&) = delete;
  BlkWorker& operator=(const BlkWorker&) = delete;

  void start();
  void stop();

 private:
  struct QueueCtx {
    ActiveQueue aq;
    bool publish_scheduled = false;
    bool broken = false;
  };
  void thread_main();
  img::Task<void> serve_queue(QueueCtx& q);
  void drain_avail(QueueCtx& q);
  void handle_chain(QueueCtx& q, uint16_t head);
  img::Task<void> run_request(QueueCtx& q, uint16_t head, Request req);
  img::Task<img::Status> execute(Request& req);
  void complete(QueueCtx& q, uint16_t head, uint32_t len);
  img::Task<void> publish_later(QueueCtx& q);

  img::IoLoop& loop_;
  img::BlockDriver& disk_;
  const Limits limits_;
  const std::string serial_;
  VirtioInterrupt& irq_;
  std::vector<std::unique_ptr<QueueCtx>> queues_;  // stable addresses for the coroutines
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// Rate-limited log line for errors a guest can provoke at will.
void log_guest_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace vmm::virtio::blk
