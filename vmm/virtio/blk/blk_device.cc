#include "virtio/blk/blk_device.h"

#include <cstring>

#include "virtio/blk/blk_spec.h"
#include "virtio/disk_resize.h"
#include "virtio/virtio_spec.h"

namespace vmm::virtio::blk {
namespace {

template <class T>
void put(std::vector<uint8_t>& cfg, uint32_t offset, T v) {
  std::memcpy(cfg.data() + offset, &v, sizeof v);  // little-endian host (virtio_spec.h)
}

}  // namespace

img::Result<std::unique_ptr<BlkDevice>> BlkDevice::create(std::unique_ptr<img::IoLoop> loop,
                                                          std::unique_ptr<img::BlockDriver> disk,
                                                          const BlkOptions& opts) {
  if (!loop || !disk) return img::invalid_argument("virtio-blk: no loop or disk");
  if (opts.num_queues == 0 || opts.num_queues > kMaxQueues) {
    return img::invalid_argument(
        img::strfmt("virtio-blk: %u queues (1 to %u)", opts.num_queues, kMaxQueues));
  }
  if (opts.queue_size < 4 || opts.queue_size > kMaxQueueSize) {
    return img::invalid_argument(img::strfmt("virtio-blk: queue size %u", opts.queue_size));
  }
  return std::unique_ptr<BlkDevice>(new BlkDevice(std::move(loop), std::move(disk), opts));
}

BlkDevice::BlkDevice(std::unique_ptr<img::IoLoop> loop, std::unique_ptr<img::BlockDriver> disk,
                     const BlkOptions& opts)
    : loop_(std::move(loop)), disk_(std::move(disk)), opts_(opts), config_(cfg::kSize, 0) {
  opts_.read_only = opts_.read_only || disk_->read_only();
  limits_.capacity_sectors = disk_->size() / kSectorSize;
  limits_.seg_max = opts_.queue_size - 2u;  // header and status take two descriptors
  limits_.size_max = kSizeMax;
  limits_.max_discard_sectors = limits_.max_write_zeroes_sectors = kMaxDiscardSectors;
  limits_.max_discard_seg = limits_.max_write_zeroes_seg = kMaxDiscardSeg;
  limits_.read_only = opts_.read_only;

  features_ = feature(kFSizeMax) | feature(kFSegMax) | feature(kFBlkSize) | feature(kFTopology) |
              feature(kFFlush);
  if (opts_.read_only) {
    features_ |= feature(kFRo);
  } else {
    features_ |= feature(kFDiscard) | feature(kFWriteZeroes);
  }
  if (opts_.num_queues > 1) features_ |= feature(kFMq);

  put<uint64_t>(config_, cfg::kCapacity, limits_.capacity_sectors);
  put<uint32_t>(config_, cfg::kSizeMax, limits_.size_max);
  put<uint32_t>(config_, cfg::kSegMax, limits_.seg_max);
  put<uint32_t>(config_, cfg::kBlkSize, kSectorSize);
  put<uint8_t>(config_, cfg::kPhysicalBlockExp, 3);  // 4 KiB physical blocks
  put<uint8_t>(config_, cfg::kAlignmentOffset, 0);
  put<uint16_t>(config_, cfg::kMinIoSize, 8);  // in logical blocks: 4 KiB
  put<uint32_t>(config_, cfg::kOptIoSize, 0);
  put<uint16_t>(config_, cfg::kNumQueues, static_cast<uint16_t>(opts_.num_queues));
  put<uint32_t>(config_, cfg::kMaxDiscardSectors, limits_.max_discard_sectors);
  put<uint32_t>(config_, cfg::kMaxDiscardSeg, limits_.max_discard_seg);
  put<uint32_t>(config_, cfg::kDiscardSectorAlignment, kDiscardAlignmentSectors);
  put<uint32_t>(config_, cfg::kMaxWriteZeroesSectors, limits_.max_write_zeroes_sectors);
  put<uint32_t>(config_, cfg::kMaxWriteZeroesSeg, limits_.max_write_zeroes_seg);
  put<uint8_t>(config_, cfg::kWriteZeroesMayUnmap, 1);
}

BlkDevice::~BlkDevice() {
  reset();
  auto s = loop_->run(disk_->close());
  if (!s)
    std::fprintf(stderr, "virtio-blk: closing the image: %s\n", s.error().to_string().c_str());
}

uint16_t BlkDevice::device_type() const { return kDeviceIdBlock; }

void BlkDevice::read_config(uint32_t offset, std::span<uint8_t> data) const {
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < config_.size() ? config_[offset + i] : 0;
  }
}

void BlkDevice::write_config(uint32_t, std::span<const uint8_t>) {
  // Only writeback is writable, and only with VIRTIO_BLK_F_CONFIG_WCE, which is not offered.
}

img::Status BlkDevice::activate(ActivateArgs args) {
  reset();
  Limits limits = limits_;
  limits.discard = args.features & feature(kFDiscard);
  limits.write_zeroes = args.features & feature(kFWriteZeroes);
  worker_ = std::make_unique<BlkWorker>(*loop_, *disk_, limits, opts_.serial,
                                        std::move(args.queues), *args.irq, stats_);
  irq_ = args.irq;
  return worker_->start();
}

img::Status BlkDevice::resize(uint64_t new_size) {
  const uint64_t old = disk_->size();
  RETURN_IF_ERROR(check_disk_grow(old, new_size, opts_.read_only, "the disk"));
  if (new_size == old) return {};
  img::Status s =
      worker_ ? worker_->resize(new_size) : loop_->run(grow_and_flush(*disk_, new_size));
  // Whatever happened, the guest sees the size the image has now.
  limits_.capacity_sectors = disk_->size() / kSectorSize;
  put<uint64_t>(config_, cfg::kCapacity, limits_.capacity_sectors);
  if (worker_ && irq_ && disk_->size() != old) irq_->signal_config_change();
  return s;
}

img::Status BlkDevice::pause() { return worker_ ? worker_->pause() : img::Status{}; }

void BlkDevice::resume() {
  if (worker_) worker_->resume();
}

void BlkDevice::reset() {
  if (worker_) worker_->stop();
  worker_.reset();
  irq_ = nullptr;
}

}  // namespace vmm::virtio::blk
