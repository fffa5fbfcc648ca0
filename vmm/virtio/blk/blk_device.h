// BlkDevice: the virtio-blk device model (virtio 1.2 §5.2) on a libimg BlockDriver. It advertises
// its limits in the config space (§5.2.4: capacity, size_max, seg_max, blk_size, topology,
// num_queues, discard and write-zeroes limits), and at DRIVER_OK starts a BlkWorker I/O thread
// that owns the IoLoop and the driver until reset() stops it (after draining the requests in
// flight).
//
// Thread-safety: the transport calls the VirtioDevice methods one at a time under its lock.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "img/block_driver.h"
#include "img/io_loop.h"
#include "virtio/blk/blk_worker.h"
#include "virtio/blk/request.h"
#include "virtio/virtio_device.h"

namespace vmm::virtio::blk {

struct BlkOptions {
  std::string serial;
  unsigned num_queues = 1;  // > 1 offers VIRTIO_BLK_F_MQ
  uint16_t queue_size = 256;
  bool read_only = false;  // offers VIRTIO_BLK_F_RO; also set when the driver is read-only
};

class BlkDevice final : public VirtioDevice {
 public:
  static constexpr unsigned kMaxQueues = 64;
  static constexpr uint32_t kSizeMax = 1u << 20;            // bytes per data descriptor
  static constexpr uint32_t kMaxDiscardSectors = 0x3fffff;  // 2 GiB - 512 per segment
  static constexpr uint32_t kMaxDiscardSeg = 32;
  static constexpr uint32_t kDiscardAlignmentSectors = 8;

  // The loop is the one disk was opened on; both move to the I/O thread while it runs.
  static img::Result<std::unique_ptr<BlkDevice>> create(std::unique_ptr<img::IoLoop> loop,
                                                        std::unique_ptr<img::BlockDriver> disk,
                                                        const BlkOptions& opts);
  ~BlkDevice() override;

  uint16_t device_type() const override;
  uint64_t device_features() const override { return features_; }
  uint16_t num_queues() const override { return static_cast<uint16_t>(opts_.num_queues); }
  uint16_t queue_max_size() const override { return opts_.queue_size; }
  uint32_t config_size() const override { return static_cast<uint32_t>(config_.size()); }
  void read_config(uint32_t offset, std::span<uint8_t> data) const override;
  void write_config(uint32_t offset, std::span<const uint8_t> data) override;
  img::Status activate(ActivateArgs args) override;
  void reset() override;
  img::Status pause() override;
  void resume() override;

  // Grows the disk to new_size bytes (a multiple of 512, not smaller than now) through libimg
  // and tells a running driver with a configuration change (§5.2.4: capacity). With the driver
  // running, the resize waits for the requests in flight and the queues stay quiet around it.
  // A shrink, a read-only disk or a format that cannot resize is refused and changes nothing.
  // Called with the transport's lock held (VirtioPciDevice::with_device).
  img::Status resize(uint64_t new_size);

  const Limits& limits() const { return limits_; }
  const BlkStats& stats() const { return stats_; }
  uint64_t size() const { return disk_->size(); }
  const char* format_name() const { return disk_->format_name(); }
  bool read_only() const { return opts_.read_only; }

 private:
  BlkDevice(std::unique_ptr<img::IoLoop> loop, std::unique_ptr<img::BlockDriver> disk,
            const BlkOptions& opts);

  std::unique_ptr<img::IoLoop> loop_;
  std::unique_ptr<img::BlockDriver> disk_;
  BlkOptions opts_;
  uint64_t features_ = 0;
  Limits limits_;
  std::vector<uint8_t> config_;
  BlkStats stats_;
  std::unique_ptr<BlkWorker> worker_;
  VirtioInterrupt* irq_ = nullptr;  // while active
};

}  // namespace vmm::virtio::blk
