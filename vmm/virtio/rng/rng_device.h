// RngDevice: virtio-rng, the entropy device (virtio 1.2 §5.4). One queue (requestq); no feature
// bits, no configuration space. Each chain the driver posts is a set of device-writable buffers
// that the device fills from the host's getrandom(2), up to max_request bytes per chain (used
// length = bytes written). A rate limit (token bucket, rate_limiter.h, kept across resets) bounds
// how fast a guest can drain the host's entropy: chains wait, in order, until tokens are there.
//
// Refused chains (a device-readable descriptor, §5.4.6.1 "The driver MUST NOT place
// driver-readable buffers into the queue", or no bytes at all) get used length 0. Reset drops
// the chains still waiting for tokens (they were never completed; the driver forgets them).
//
// Thread-safety: the transport calls the VirtioDevice methods one at a time under its lock; the
// worker runs on its QueueServer thread.
#pragma once

#include <cstdint>
#include <memory>

#include "img/io_loop.h"
#include "virtio/rate_limiter.h"
#include "virtio/virtio_device.h"

namespace vmm::virtio::rng {

struct RngOptions {
  uint64_t rate = 0;                // bytes per second; 0 = unlimited
  uint32_t max_request = 64 << 10;  // bytes filled per chain at most
  uint16_t queue_size = 256;
};

class RngWorker;

class RngDevice final : public VirtioDevice {
 public:
  static img::Result<std::unique_ptr<RngDevice>> create(const RngOptions& opts,
                                                        img::IoLoop::Options loop_opts = {});
  ~RngDevice() override;

  uint16_t device_type() const override;
  uint64_t device_features() const override { return 0; }
  uint16_t num_queues() const override { return 1; }
  uint16_t queue_max_size() const override { return opts_.queue_size; }
  uint32_t config_size() const override { return 0; }
  void read_config(uint32_t offset, std::span<uint8_t> data) const override;
  void write_config(uint32_t, std::span<const uint8_t>) override {}
  img::Status activate(ActivateArgs args) override;
  void reset() override;
  img::Status pause() override;
  void resume() override;

 private:
  RngDevice(std::unique_ptr<img::IoLoop> loop, const RngOptions& opts);

  std::unique_ptr<img::IoLoop> loop_;
  RngOptions opts_;
  // Outlives the workers: a guest that resets the device does not get a fresh burst.
  RateLimiter limiter_;
  std::unique_ptr<RngWorker> worker_;
};

}  // namespace vmm::virtio::rng
