#include "virtio/console/console_device.h"

#include <poll.h>

#include <cerrno>
#include <cstring>
#include <deque>

#include "virtio/buffers.h"
#include "virtio/queue_server.h"
#include "virtio/virtio_spec.h"

namespace vmm::virtio::console {

// The handler on the QueueServer: one writer coroutine for the transmit FIFO (output keeps the
// guest's order), one reader coroutine that fills parked receive chains from the host input.
class ConsoleWorker final : public ChainHandler {
 public:
  ConsoleWorker(img::IoLoop& loop, ConsoleHost& host, uint32_t max_request,
                std::vector<ActiveQueue> queues, VirtioInterrupt& irq)
      : host_(host),
        max_request_(max_request),
        tx_ready_(loop),
        rx_ready_(loop),
        server_("virtio-console", loop, std::move(queues), irq, *this) {}
  ~ConsoleWorker() override { server_.stop(); }

  img::Status start() { return server_.start(); }
  img::Status pause() { return server_.pause(); }
  void resume() { server_.resume(); }

  void started(QueueServer& s) override {
    s.loop().spawn(writer());
    if (host_.in_fd() >= 0) s.loop().spawn(reader());
  }

  img::Status handle_chain(uint16_t queue, DescriptorChain chain) override {
    if (queue == kTransmitQueue) {
      auto bufs = collect_buffers(chain, BufferDirection::kDeviceReads, max_request_);
      if (!bufs) return img::invalid_argument(bufs.error());
      tx_.push_back({chain.head, std::move(*bufs)});
      tx_ready_.notify();
      return {};
    }
    if (queue == kReceiveQueue) {
      auto bufs = collect_buffers(chain, BufferDirection::kDeviceWrites, max_request_);
      if (!bufs) return img::invalid_argument(bufs.error());
      if (input_ended_) {
        server_.complete(queue, chain.head, 0);  // nothing will ever arrive
        return {};
      }
      rx_.push_back({chain.head, std::move(*bufs)});
      rx_ready_.notify();
      return {};
    }
    return img::invalid_argument(img::strfmt("no queue %u on a single-port console", queue));
  }

  void stopping() override {
    tx_.clear();  // dropped: after a reset the driver forgets them
    rx_.clear();
    tx_ready_.notify();
    rx_ready_.notify();
  }

 private:
  struct Pending {
    uint16_t head;
    Buffers bufs;
  };

  img::Task<void> writer() {
    while (!server_.stopping()) {
      if (tx_.empty()) {
        co_await tx_ready_.wait();
        continue;
      }
      Pending& p = tx_.front();
      bool ok = true;
      for (std::span<uint8_t> s : p.bufs.spans) {
        size_t at = 0;
        while (ok && at < s.size()) {
          long n = host_.write_some(s.subspan(at));
          if (n == -EAGAIN || n == -EWOULDBLOCK) {
            ok = co_await server_.wait(host_.out_fd(), POLLOUT);
            continue;
          }
          if (n <= 0) {
            // The host side went away (EPIPE, closed file): the guest's output is lost, but the
            // guest keeps running and its buffers come back.
            if (!output_lost_)
              server_.log_guest_error("output: %s", strerror(-static_cast<int>(n)));
            output_lost_ = true;
            break;
          }
          at += static_cast<size_t>(n);
        }
        if (!ok || output_lost_) break;
      }
      if (!ok || tx_.empty()) break;                // stopping: stopping() cleared the FIFO
      server_.complete(kTransmitQueue, p.head, 0);  // §5.3.6: the device writes nothing back
      tx_.pop_front();
    }
  }

  img::Task<void> reader() {
    while (!server_.stopping()) {
      if (rx_.empty()) {
        co_await rx_ready_.wait();
        continue;
      }
      bool readable = co_await server_.wait(host_.in_fd(), POLLIN);  // gcc 12: not in the if
      if (!readable) break;
      if (rx_.empty()) continue;
      Pending p = std::move(rx_.front());
      long n = host_.read_some(p.bufs.spans);
      if (n == -EAGAIN || n == -EWOULDBLOCK) {
        rx_.front() = std::move(p);
        continue;
      }
      rx_.pop_front();
      if (n <= 0) {
        // End of input (or an error): give every parked buffer back empty and stop reading.
        input_ended_ = true;
        server_.complete(kReceiveQueue, p.head, 0);
        for (const Pending& q : rx_) server_.complete(kReceiveQueue, q.head, 0);
        rx_.clear();
        break;
      }
      server_.complete(kReceiveQueue, p.head, static_cast<uint32_t>(n));
    }
  }

  ConsoleHost& host_;
  const uint32_t max_request_;
  std::deque<Pending> tx_, rx_;
  LoopEvent tx_ready_, rx_ready_;
  bool input_ended_ = false;
  bool output_lost_ = false;
  QueueServer server_;  // last: stopped before the members above go
};

img::Result<std::unique_ptr<ConsoleDevice>> ConsoleDevice::create(const ConsoleOptions& opts,
                                                                  img::IoLoop::Options loop_opts) {
  if (opts.queue_size < 1 || opts.queue_size > kMaxQueueSize || opts.max_request == 0) {
    return img::invalid_argument("virtio-console: bad queue size or request cap");
  }
  ASSIGN_OR_RETURN(auto host, ConsoleHost::open(opts.host));
  ASSIGN_OR_RETURN(auto loop, img::IoLoop::create(loop_opts));
  return std::unique_ptr<ConsoleDevice>(new ConsoleDevice(std::move(loop), std::move(host), opts));
}

ConsoleDevice::ConsoleDevice(std::unique_ptr<img::IoLoop> loop, std::unique_ptr<ConsoleHost> host,
                             const ConsoleOptions& opts)
    : loop_(std::move(loop)), host_(std::move(host)), opts_(opts), config_(cfg::kSize, 0) {
  uint16_t cols = opts_.cols, rows = opts_.rows;
  host_->window_size(&cols, &rows);
  std::memcpy(config_.data() + cfg::kCols, &cols, 2);  // little-endian host (virtio_spec.h)
  std::memcpy(config_.data() + cfg::kRows, &rows, 2);
  uint32_t ports = 1;  // only meaningful with F_MULTIPORT, which is not offered
  std::memcpy(config_.data() + cfg::kMaxNrPorts, &ports, 4);
}

ConsoleDevice::~ConsoleDevice() { reset(); }

uint16_t ConsoleDevice::device_type() const { return kDeviceIdConsole; }

uint64_t ConsoleDevice::device_features() const { return feature(kFSize) | feature(kFEmergWrite); }

void ConsoleDevice::read_config(uint32_t offset, std::span<uint8_t> data) const {
  for (size_t i = 0; i < data.size(); ++i) {
    // emerg_wr reads as zero; it is a write-only doorbell.
    uint64_t at = uint64_t{offset} + i;
    data[i] = at < cfg::kEmergWr ? config_[at] : 0;
  }
}

void ConsoleDevice::write_config(uint32_t offset, std::span<const uint8_t> data) {
  // §5.3.4: a write to emerg_wr outputs its low byte at once, even before DRIVER_OK (early
  // boot messages). The other fields are read-only.
  if (offset != cfg::kEmergWr || data.empty()) return;
  (void)host_->write_some(data.first(1));
}

img::Status ConsoleDevice::activate(ActivateArgs args) {
  reset();
  worker_ = std::make_unique<ConsoleWorker>(*loop_, *host_, opts_.max_request,
                                            std::move(args.queues), *args.irq);
  return worker_->start();
}

void ConsoleDevice::reset() { worker_.reset(); }

img::Status ConsoleDevice::pause() { return worker_ ? worker_->pause() : img::Status{}; }

void ConsoleDevice::resume() {
  if (worker_) worker_->resume();
}

}  // namespace vmm::virtio::console
