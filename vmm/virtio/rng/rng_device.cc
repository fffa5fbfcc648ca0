#include "virtio/rng/rng_device.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <deque>

#include "virtio/buffers.h"
#include "virtio/queue_server.h"
#include "virtio/rate_limiter.h"
#include "virtio/virtio_spec.h"

namespace vmm::virtio::rng {

// The handler on the QueueServer: fills chains at once while tokens last, else queues them for
// the filler coroutine, which sleeps until the bucket has enough.
class RngWorker final : public ChainHandler {
 public:
  RngWorker(img::IoLoop& loop, const RngOptions& opts, RateLimiter& limiter,
            std::vector<ActiveQueue> queues, VirtioInterrupt& irq)
      : opts_(opts),
        limiter_(limiter),
        waiting_ready_(loop),
        server_("virtio-rng", loop, std::move(queues), irq, *this) {}
  ~RngWorker() override { server_.stop(); }

  img::Status start() { return server_.start(); }
  img::Status pause() { return server_.pause(); }
  void resume() { server_.resume(); }

  void started(QueueServer& s) override { s.loop().spawn(filler()); }

  img::Status handle_chain(uint16_t queue, DescriptorChain chain) override {
    auto bufs = collect_buffers(chain, BufferDirection::kDeviceWrites, opts_.max_request);
    if (!bufs) return img::invalid_argument(bufs.error());
    Pending p{queue, chain.head, std::move(*bufs)};
    if (waiting_.empty() && limiter_.wait_for(p.bufs.total).count() == 0) return fill(p);
    waiting_.push_back(std::move(p));
    waiting_ready_.notify();
    return {};
  }

  void stopping() override {
    waiting_.clear();  // dropped, not completed: the driver resets the queue
    waiting_ready_.notify();
  }

 private:
  struct Pending {
    uint16_t queue;
    uint16_t head;
    Buffers bufs;
  };

  img::Status fill(const Pending& p) {
    limiter_.take(p.bufs.total);
    for (std::span<uint8_t> s : p.bufs.spans) {
      size_t at = 0;
      while (at < s.size()) {
        ssize_t n = ::getrandom(s.data() + at, s.size() - at, 0);
        if (n < 0) {
          if (errno == EINTR) continue;
          server_.log_guest_error("getrandom: %s", strerror(errno));
          server_.complete(p.queue, p.head, 0);
          return {};
        }
        at += static_cast<size_t>(n);
      }
    }
    server_.complete(p.queue, p.head, p.bufs.total);
    return {};
  }

  img::Task<void> filler() {
    while (!server_.stopping()) {
      if (waiting_.empty()) {
        co_await waiting_ready_.wait();
        continue;
      }
      auto d = limiter_.wait_for(waiting_.front().bufs.total);
      if (d.count() > 0) {
        bool slept = co_await server_.sleep_for(d);  // not inside the if: gcc 12 miscompiles it
        if (!slept) break;
        continue;
      }
      Pending p = std::move(waiting_.front());
      waiting_.pop_front();
      (void)fill(p);
    }
  }

  RngOptions opts_;
  RateLimiter& limiter_;
  std::deque<Pending> waiting_;
  LoopEvent waiting_ready_;
  QueueServer server_;  // last: stopped before the members above go
};

img::Result<std::unique_ptr<RngDevice>> RngDevice::create(const RngOptions& opts,
                                                          img::IoLoop::Options loop_opts) {
  if (opts.max_request == 0) return img::invalid_argument("virtio-rng: max request of 0 bytes");
  if (opts.queue_size < 1 || opts.queue_size > kMaxQueueSize) {
    return img::invalid_argument(img::strfmt("virtio-rng: queue size %u", opts.queue_size));
  }
  ASSIGN_OR_RETURN(auto loop, img::IoLoop::create(loop_opts));
  return std::unique_ptr<RngDevice>(new RngDevice(std::move(loop), opts));
}

RngDevice::RngDevice(std::unique_ptr<img::IoLoop> loop, const RngOptions& opts)
    : loop_(std::move(loop)), opts_(opts), limiter_(opts.rate, opts.max_request) {}

RngDevice::~RngDevice() { reset(); }

uint16_t RngDevice::device_type() const { return kDeviceIdEntropy; }

void RngDevice::read_config(uint32_t, std::span<uint8_t> data) const {
  std::fill(data.begin(), data.end(), 0);  // §5.4.4: no configuration
}

img::Status RngDevice::activate(ActivateArgs args) {
  reset();
  worker_ = std::make_unique<RngWorker>(*loop_, opts_, limiter_, std::move(args.queues), *args.irq);
  return worker_->start();
}

void RngDevice::reset() { worker_.reset(); }

img::Status RngDevice::pause() { return worker_ ? worker_->pause() : img::Status{}; }

void RngDevice::resume() {
  if (worker_) worker_->resume();
}

}  // namespace vmm::virtio::rng
