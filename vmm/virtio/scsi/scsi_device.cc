#include "virtio/scsi/scsi_device.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "img/image.h"
#include "virtio/disk_resize.h"
#include "virtio/scsi/scsi_spec.h"
#include "virtio/scsi/scsi_worker.h"
#include "virtio/virtio_spec.h"

namespace vmm::virtio::scsi {
namespace {

template <class T>
void put(std::vector<uint8_t>& cfg, uint32_t offset, T v) {
  std::memcpy(cfg.data() + offset, &v, sizeof v);  // little-endian host (virtio_spec.h)
}
template <class T>
T get(const std::vector<uint8_t>& cfg, uint32_t offset) {
  T v;
  std::memcpy(&v, cfg.data() + offset, sizeof v);
  return v;
}

// FNV-1a: a stable identifier per serial for VPD 0x83 (the same image path, the same id).
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

}  // namespace

img::Result<std::unique_ptr<ScsiDevice>> ScsiDevice::create(std::unique_ptr<img::IoLoop> loop,
                                                            std::vector<ScsiLun> luns,
                                                            const ScsiOptions& opts) {
  if (!loop) return img::invalid_argument("virtio-scsi: no loop");
  if (luns.empty() || luns.size() > kMaxLuns) {
    return img::invalid_argument(
        img::strfmt("virtio-scsi: %zu LUNs (1 to %zu)", luns.size(), kMaxLuns));
  }
  for (const ScsiLun& l : luns)
    if (!l.disk) return img::invalid_argument("virtio-scsi: a LUN without a disk");
  if (opts.queue_size < 4 || opts.queue_size > kMaxQueueSize) {
    return img::invalid_argument(img::strfmt("virtio-scsi: queue size %u", opts.queue_size));
  }
  return std::unique_ptr<ScsiDevice>(new ScsiDevice(std::move(loop), std::move(luns), opts));
}

ScsiDevice::ScsiDevice(std::unique_ptr<img::IoLoop> loop, std::vector<ScsiLun> luns,
                       const ScsiOptions& opts)
    : loop_(std::move(loop)), luns_(std::move(luns)), opts_(opts), config_(cfg::kSize, 0) {
  std::vector<uint16_t> ids;
  for (size_t i = 0; i < luns_.size(); ++i) ids.push_back(static_cast<uint16_t>(i));
  for (ScsiLun& l : luns_) {
    l.read_only = l.read_only || l.disk->read_only();
    LunInfo info;
    info.blocks = l.disk->size() / kBlockSize;
    info.read_only = l.read_only;
    info.write_cache = l.write_cache;
    // The qcow2 cluster is the unit in which space comes back; raw files use 4 KiB pages.
    uint64_t cluster = std::max<uint64_t>(l.disk->compressed_cluster_size(), 4096);
    info.granularity = static_cast<uint32_t>(std::min<uint64_t>(cluster / kBlockSize, 1u << 16));
    info.max_transfer = kMaxSectors;
    info.unmap = !l.read_only;
    info.serial = l.serial;
    info.naa = fnv1a(l.serial);
    info.luns = ids;
    infos_.push_back(std::move(info));
  }
  put<uint32_t>(config_, cfg::kNumQueues, 1);
  put<uint32_t>(config_, cfg::kSegMax, opts_.queue_size - 2u);  // request and response
  put<uint32_t>(config_, cfg::kMaxSectors, kMaxSectors);
  put<uint32_t>(config_, cfg::kCmdPerLun, opts_.queue_size);
  put<uint32_t>(config_, cfg::kEventInfoSize, kEventSize);
  put<uint32_t>(config_, cfg::kSenseSize, kDefaultSenseSize);
  put<uint32_t>(config_, cfg::kCdbSize, kDefaultCdbSize);
  put<uint16_t>(config_, cfg::kMaxChannel, 0);
  put<uint16_t>(config_, cfg::kMaxTarget, 0);
  put<uint32_t>(config_, cfg::kMaxLun, static_cast<uint32_t>(luns_.size() - 1));
}

ScsiDevice::~ScsiDevice() {
  reset();
  for (ScsiLun& l : luns_) {
    auto s = loop_->run(l.disk->close());
    if (!s)
      std::fprintf(stderr, "virtio-scsi: closing an image: %s\n", s.error().to_string().c_str());
  }
}

uint16_t ScsiDevice::device_type() const { return kDeviceIdScsi; }

void ScsiDevice::read_config(uint32_t offset, std::span<uint8_t> data) const {
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < config_.size() ? config_[offset + i] : 0;
  }
}

void ScsiDevice::write_config(uint32_t offset, std::span<const uint8_t> data) {
  // §5.6.4: only sense_size and cdb_size are driver-writable; capped so a driver cannot make
  // each request copy an unbounded header.
  for (uint32_t field : {cfg::kSenseSize, cfg::kCdbSize}) {
    if (offset != field || data.size() != 4) continue;
    uint32_t v;
    std::memcpy(&v, data.data(), 4);
    put<uint32_t>(config_, field,
                  std::min(v, field == cfg::kSenseSize ? kMaxSenseSize : kMaxCdbSize));
  }
}

img::Status ScsiDevice::activate(ActivateArgs args) {
  reset();
  std::vector<WorkerLun> wl;
  for (size_t i = 0; i < luns_.size(); ++i) wl.push_back({luns_[i].disk.get(), infos_[i]});
  worker_ =
      std::make_unique<ScsiWorker>(*loop_, std::move(wl), get<uint32_t>(config_, cfg::kCdbSize),
                                   get<uint32_t>(config_, cfg::kSenseSize), std::move(args.queues),
                                   *args.irq, (args.features & kFChange) != 0);
  return worker_->start();
}

uint64_t ScsiDevice::device_features() const { return kFChange; }

img::Status ScsiDevice::resize(size_t i, uint64_t new_size) {
  if (i >= luns_.size()) {
    return img::invalid_argument(img::strfmt("no LUN %zu (there are %zu)", i, luns_.size()));
  }
  img::BlockDriver& disk = *luns_[i].disk;
  const uint64_t old = disk.size();
  RETURN_IF_ERROR(check_disk_grow(old, new_size, luns_[i].read_only, "the LUN"));
  if (new_size == old) return {};
  img::Status s =
      worker_ ? worker_->resize(i, new_size) : loop_->run(grow_and_flush(disk, new_size));
  // Whatever happened, READ CAPACITY reports the size the image has now, after a reset too.
  infos_[i].blocks = disk.size() / kBlockSize;
  return s;
}

img::Status ScsiDevice::pause() { return worker_ ? worker_->pause() : img::Status{}; }

void ScsiDevice::resume() {
  if (worker_) worker_->resume();
}

void ScsiDevice::reset() {
  if (worker_) worker_->stop();
  worker_.reset();
}

img::Result<std::unique_ptr<ScsiDevice>> make_scsi_device(
    const std::vector<ScsiDiskConfig>& configs, img::IoLoop::Options loop_opts) {
  ASSIGN_OR_RETURN(auto loop, img::IoLoop::create(loop_opts));
  std::vector<ScsiLun> luns;
  for (size_t i = 0; i < configs.size(); ++i) {
    const ScsiDiskConfig& c = configs[i];
    img::OpenOptions o;
    o.format = c.format;
    o.read_only = c.read_only;
    o.direct = c.direct;
    auto disk = loop->run(img::open_image(*loop, c.path, o));
    if (!disk) return img::Unexpected(std::move(disk.error().prepend("virtio-scsi " + c.path)));
    ScsiLun l;
    l.disk = std::move(*disk);
    l.read_only = c.read_only;
    l.write_cache = c.write_cache;
    l.serial = img::strfmt("vmm-scsi%zu", i);
    luns.push_back(std::move(l));
  }
  return ScsiDevice::create(std::move(loop), std::move(luns));
}

}  // namespace vmm::virtio::scsi
