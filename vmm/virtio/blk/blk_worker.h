// BlkWorker: the virtio-blk backend on the shared QueueServer. The server drains the queues and
// hands over each validated chain; the worker parses it (request.h: parse, then act) and spawns
// one coroutine per request on the server's IoLoop, so every request the driver posted is in
// flight at once on io_uring. Data moves between the image and guest memory directly (iovecs into
// guest RAM, no bounce copy).
//
// A request that fails parsing is returned with an IOERR/UNSUPP status when its status byte is
// usable (used length 1), else with used length 0; both are logged. stop() (device reset) lets
// the requests in flight finish before it returns: block I/O is drained, never cancelled.
//
// Thread-safety: start()/stop() from the owning (transport) thread; everything else runs on the
// server thread, which has the loop and the driver to itself while it runs.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "img/block_driver.h"
#include "img/io_loop.h"
#include "virtio/blk/request.h"
#include "virtio/queue_server.h"
#include "virtio/virtio_device.h"

namespace vmm::virtio::blk {

// Per-disk request counters (the control socket's disk-stats), kept by the device across resets.
// Counted when a request completes; bytes only for requests that succeeded.
struct BlkStats {
  std::atomic<uint64_t> reads{0}, read_bytes{0};
  std::atomic<uint64_t> writes{0}, write_bytes{0};
  std::atomic<uint64_t> flushes{0}, discards{0}, write_zeroes{0};
  std::atomic<uint64_t> errors{0};  // requests that completed with IOERR
};

class BlkWorker final : public ChainHandler {
 public:
  BlkWorker(img::IoLoop& loop, img::BlockDriver& disk, const Limits& limits, std::string serial,
            std::vector<ActiveQueue> queues, VirtioInterrupt& irq, BlkStats& stats);
  ~BlkWorker() override;
  BlkWorker(const BlkWorker&) = delete;
  BlkWorker& operator=(const BlkWorker&) = delete;

  img::Status start() { return server_.start(); }
  void stop() { server_.stop(); }
  img::Status pause() { return server_.pause(); }
  void resume() { server_.resume(); }
  // Grows the disk to new_size bytes under the running guest: with no request in flight (the
  // server quiesces around it), then flushed; later requests see the new capacity.
  img::Status resize(uint64_t new_size);

  // ChainHandler.
  img::Status handle_chain(uint16_t queue, DescriptorChain chain) override;
  // Waits for every request in flight, then flushes the disk.
  img::Task<img::Status> quiesce() override;

 private:
  img::Task<void> run_request(uint16_t queue, uint16_t head, Request req);
  img::Task<img::Status> execute(Request& req);
  void count(const Request& req, bool ok);

  img::BlockDriver& disk_;
  Limits limits_;  // capacity changes only in resize(), on the server thread
  const std::string serial_;
  BlkStats& stats_;
  QueueServer server_;  // last: stopped (and its thread joined) before the members above go
};

}  // namespace vmm::virtio::blk
