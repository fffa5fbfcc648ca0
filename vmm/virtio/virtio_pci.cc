#include "virtio/virtio_pci.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "virtio/virtio_spec.h"

namespace vmm::virtio {
namespace {

// What the PCI function looks like, chosen by virtio device type (§5). §4.1.2.1 allows any class
// code; these are the ones QEMU uses, so guests and tools (lspci) see the usual picture.
struct DeviceKind {
  uint16_t type;
  uint32_t class_code;  // base class, subclass, prog-if
};
constexpr DeviceKind kDeviceKinds[] = {
    {kDeviceIdNet, 0x020000},      // network controller, ethernet
    {kDeviceIdBlock, 0x018000},    // mass storage, other
    {kDeviceIdConsole, 0x078000},  // simple communication controller, other
    {kDeviceIdEntropy, 0xff0000},  // unassigned class
    {kDeviceIdBalloon, 0xff0000}, {kDeviceIdScsi, 0x010000},  // mass storage, SCSI
};
constexpr uint32_t kDefaultClassCode = 0xff0000;

PciIds ids_for(const VirtioDevice& dev) {
  uint16_t type = dev.device_type();
  uint32_t class_code = kDefaultClassCode;
  for (const DeviceKind& k : kDeviceKinds) {
    if (k.type == type) class_code = k.class_code;
  }
  return PciIds{
      .vendor = kPciVendorId,
      .device = static_cast<uint16_t>(kPciDeviceIdBase + type),
      .class_code = class_code,
      .revision = 1,  // modern-only device
      .subsystem_vendor = kPciVendorId,
      .subsystem = 0x40,  // §4.1.2.1: SHOULD be at least 0x40
  };
}

int new_eventfd() { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

void kick(int fd) {
  uint64_t one = 1;
  ssize_t n = ::write(fd, &one, sizeof one);
  (void)n;
}

// §4.1.4 struct virtio_pci_cap after the (cap_vndr, cap_next) header, optionally followed by
// notify_off_multiplier (struct virtio_pci_notify_cap).
img::Status add_virtio_cap(PciConfigSpace& cfg, uint8_t type, uint32_t offset, uint32_t length,
                           std::optional<uint32_t> multiplier = std::nullopt) {
  uint8_t body[18] = {};
  size_t len = multiplier ? 18 : 14;
  body[0] = static_cast<uint8_t>(len + 2);  // cap_len
  body[1] = type;                           // cfg_type
  body[2] = VirtioPciDevice::kBar;          // bar
  body[3] = 0;                              // id
  std::memcpy(body + 6, &offset, 4);
  std::memcpy(body + 10, &length, 4);
  if (multiplier) std::memcpy(body + 14, &*multiplier, 4);
  ASSIGN_OR_RETURN(uint8_t at, cfg.add_capability(kPciCapVendor, std::span(body, len)));
  (void)at;
  return {};
}

}  // namespace

VirtioPciDevice::VirtioPciDevice(std::unique_ptr<VirtioDevice> dev, const GuestMemory& mem,
                                 InterruptController& ic, IoEventRegistry& io)
    : PciDevice(ids_for(*dev)),
      device_(std::move(dev)),
      mem_(mem),
      io_(io),
      msix_(ic, static_cast<uint16_t>(device_->num_queues() + 1)),
      num_queues_(device_->num_queues()),
      queues_(num_queues_),
      kick_fds_(num_queues_, -1),
      kick_registered_(num_queues_, false),
      active_vectors_(num_queues_, kMsiNoVectorValue) {}

img::Result<std::shared_ptr<VirtioPciDevice>> VirtioPciDevice::create(
    std::unique_ptr<VirtioDevice> dev, const GuestMemory& mem, InterruptController& ic,
    IoEventRegistry& io) {
  if (!dev || dev->num_queues() == 0 || dev->num_queues() > 256 || dev->queue_max_size() == 0 ||
      dev->queue_max_size() > kMaxQueueSize || dev->config_size() > 0x1000) {
    return img::invalid_argument("virtio-pci: device has a bad queue count, size or config size");
  }
  auto d = std::make_shared<VirtioPciDevice>(std::move(dev), mem, ic, io);
  RETURN_IF_ERROR(d->init());
  return d;
}

img::Status VirtioPciDevice::init() {
  PciConfigSpace& cfg = config_space();
  RETURN_IF_ERROR(cfg.add_memory_bar(kBar, kBarSize, /*is64=*/true, /*prefetchable=*/false));
  RETURN_IF_ERROR(add_virtio_cap(cfg, kPciCapCommonCfg, kCommonOffset, common::kSize));
  RETURN_IF_ERROR(add_virtio_cap(cfg, kPciCapNotifyCfg, kNotifyOffset,
                                 num_queues_ * kNotifyMultiplier, kNotifyMultiplier));
  RETURN_IF_ERROR(add_virtio_cap(cfg, kPciCapIsrCfg, kIsrOffset, 1));
  if (device_->config_size() > 0) {
    RETURN_IF_ERROR(
        add_virtio_cap(cfg, kPciCapDeviceCfg, kDeviceCfgOffset, device_->config_size()));
  }
  RETURN_IF_ERROR(msix_.add_capability(cfg, kBar, kMsixTableOffset, kMsixPbaOffset));
  for (auto& fd : kick_fds_) {
    fd = new_eventfd();
    if (fd < 0) return img::io_error(errno, "eventfd");
  }
  std::lock_guard lock(mu_);
  reset_locked();
  return {};
}

VirtioPciDevice::~VirtioPciDevice() {
  std::lock_guard lock(mu_);
  if (active_) device_->reset();
  active_ = false;
  for (size_t q = 0; q < kick_fds_.size(); ++q) {
    if (kick_fds_[q] < 0) continue;
    if (kick_registered_[q]) {
      io_.remove_ioeventfd(kick_fds_[q]);
    } else {
      close(kick_fds_[q]);
    }
  }
}

uint64_t VirtioPciDevice::offered_features() const {
  return device_->device_features() | feature(kFVersion1) | feature(kFRingIndirectDesc) |
         feature(kFRingEventIdx);
}

uint16_t VirtioPciDevice::checked_vector(uint16_t v) const {
  // §4.1.5.1.2: a vector the device cannot map reads back as NO_VECTOR.
  return v < msix_.vectors() ? v : kMsiNoVectorValue;
}

uint8_t VirtioPciDevice::device_status() const {
  std::lock_guard lock(mu_);
  return static_cast<uint8_t>(status_ | (needs_reset_.load() ? kStatusNeedsReset : 0));
}

img::Status VirtioPciDevice::pause() {
  std::lock_guard lock(mu_);
  return active_ ? device_->pause() : img::Status{};
}

void VirtioPciDevice::resume() {
  std::lock_guard lock(mu_);
  if (active_) device_->resume();
}

void VirtioPciDevice::reset_function() {
  {
    std::lock_guard lock(mu_);
    reset_locked();
  }
  msix_.reset();
}

void VirtioPciDevice::config_written(uint32_t offset, uint32_t len) {
  msix_.config_written(config_space(), offset, len);
}

void VirtioPciDevice::bar_placed(unsigned bar, uint64_t addr) {
  if (bar != kBar) return;
  std::lock_guard lock(mu_);
  bar_addr_ = addr;
  if (active_) {
    // The running device waits on the current eventfds; notifications at the new address arrive
    // as MMIO exits (and are forwarded) until the next reset re-registers them.
    reregister_pending_ = true;
    return;
  }
  register_notifiers(addr);
}

void VirtioPciDevice::register_notifiers(uint64_t bar_addr) {
  reregister_pending_ = false;
  for (uint16_t q = 0; q < num_queues_; ++q) {
    if (kick_registered_[q]) {
      io_.remove_ioeventfd(kick_fds_[q]);
    } else if (kick_fds_[q] >= 0) {
      close(kick_fds_[q]);
    }
    kick_registered_[q] = false;
    kick_fds_[q] = -1;
    uint64_t addr = bar_addr + kNotifyOffset + uint64_t{q} * kNotifyMultiplier;
    auto fd = io_.add_ioeventfd(addr, 2, /*pio=*/false, std::nullopt);
    if (fd) {
      kick_fds_[q] = *fd;
      kick_registered_[q] = true;
    } else {
      std::fprintf(stderr, "virtio-pci: queue %u notifications through MMIO exits: %s\n", q,
                   fd.error().to_string().c_str());
      kick_fds_[q] = new_eventfd();
    }
  }
}

void VirtioPciDevice::bar_read(unsigned bar, uint64_t offset, std::span<uint8_t> data) {
  std::memset(data.data(), 0, data.size());
  if (bar != kBar) return;
  uint32_t size = static_cast<uint32_t>(data.size());
  if (offset < kCommonOffset + common::kSize) {
    std::lock_guard lock(mu_);
    uint64_t v = common_read(static_cast<uint32_t>(offset), size);
    std::memcpy(data.data(), &v, size);
  } else if (offset == kIsrOffset) {
    // §4.1.4.5.1: reading the ISR status clears it.
    data[0] = isr_.exchange(0);
  } else if (offset >= kDeviceCfgOffset && offset < kDeviceCfgOffset + 0x1000) {
    std::lock_guard lock(mu_);
    uint32_t off = static_cast<uint32_t>(offset - kDeviceCfgOffset);
    if (off + size <= device_->config_size()) device_->read_config(off, data);
  } else if (offset >= kMsixTableOffset && offset < kMsixTableOffset + msix_.table_bytes()) {
    msix_.table_read(offset - kMsixTableOffset, data);
  } else if (offset >= kMsixPbaOffset && offset < kMsixPbaOffset + msix_.pba_bytes()) {
    msix_.pba_read(offset - kMsixPbaOffset, data);
  }
}

void VirtioPciDevice::bar_write(unsigned bar, uint64_t offset, std::span<const uint8_t> data) {
  if (bar != kBar) return;
  uint32_t size = static_cast<uint32_t>(data.size());
  if (offset < kCommonOffset + common::kSize) {
    uint64_t v = 0;
    std::memcpy(&v, data.data(), size);
    std::lock_guard lock(mu_);
    common_write(static_cast<uint32_t>(offset), size, v);
  } else if (offset >= kNotifyOffset &&
             offset < kNotifyOffset + uint64_t{num_queues_} * kNotifyMultiplier) {
    // A notification that did not match the ioeventfd (or none is registered).
    std::lock_guard lock(mu_);
    uint64_t q = (offset - kNotifyOffset) / kNotifyMultiplier;
    if (kick_fds_[q] >= 0) kick(kick_fds_[q]);
  } else if (offset >= kDeviceCfgOffset && offset < kDeviceCfgOffset + 0x1000) {
    std::lock_guard lock(mu_);
    uint32_t off = static_cast<uint32_t>(offset - kDeviceCfgOffset);
    if (off + size <= device_->config_size()) device_->write_config(off, data);
  } else if (offset >= kMsixTableOffset && offset < kMsixTableOffset + msix_.table_bytes()) {
    msix_.table_write(offset - kMsixTableOffset, data);
  }
}

uint64_t VirtioPciDevice::common_read(uint32_t offset, uint32_t size) {
  const QueueState* q = queue_select_ < num_queues_ ? &queues_[queue_select_] : nullptr;
  auto field = [&](uint32_t at, uint32_t width) { return offset == at && size == width; };
  uint64_t features = offered_features();
  using namespace common;
  if (field(kDeviceFeatureSelect, 4)) return device_feature_select_;
  if (field(kDeviceFeature, 4)) {
    return device_feature_select_ < 2
               ? static_cast<uint32_t>(features >> (32 * device_feature_select_))
               : 0;
  }
  if (field(kDriverFeatureSelect, 4)) return driver_feature_select_;
  if (field(kDriverFeature, 4)) {
    return driver_feature_select_ < 2
               ? static_cast<uint32_t>(driver_features_ >> (32 * driver_feature_select_))
               : 0;
  }
  if (field(kConfigMsixVector, 2)) return config_vector_;
  if (field(kNumQueues, 2)) return num_queues_;
  if (field(kDeviceStatus, 1)) return status_ | (needs_reset_.load() ? kStatusNeedsReset : 0);
  if (field(kConfigGeneration, 1)) return config_generation_.load();
  if (field(kQueueSelect, 2)) return queue_select_;
  if (field(kQueueNotifyOff, 2)) return q ? queue_select_ : 0;
  if (!q) return 0;  // §4.1.4.3.1: queue_size reads 0 for a queue that does not exist
  if (field(kQueueSize, 2)) return q->size;
  if (field(kQueueMsixVector, 2)) return q->msix_vector;
  if (field(kQueueEnable, 2)) return q->ready;
  for (auto [at, value] :
       {std::pair{kQueueDesc, q->desc}, {kQueueDriver, q->avail}, {kQueueDevice, q->used}}) {
    if (field(at, 8)) return value;
    if (field(at, 4)) return static_cast<uint32_t>(value);
    if (field(at + 4, 4)) return value >> 32;
  }
  return 0;
}

void VirtioPciDevice::common_write(uint32_t offset, uint32_t size, uint64_t value) {
  auto field = [&](uint32_t at, uint32_t width) { return offset == at && size == width; };
  using namespace common;
  uint32_t v32 = static_cast<uint32_t>(value);
  if (field(kDeviceFeatureSelect, 4)) {
    device_feature_select_ = v32;
  } else if (field(kDriverFeatureSelect, 4)) {
    driver_feature_select_ = v32;
  } else if (field(kDriverFeature, 4)) {
    // Features are fixed once FEATURES_OK is set (§3.1.1).
    if (driver_feature_select_ < 2 && !(status_ & kStatusFeaturesOk)) {
      unsigned shift = 32 * driver_feature_select_;
      driver_features_ =
          (driver_features_ & ~(uint64_t{0xffffffff} << shift)) | (uint64_t{v32} << shift);
    }
  } else if (field(kConfigMsixVector, 2)) {
    config_vector_ = checked_vector(static_cast<uint16_t>(value));
    active_config_vector_.store(config_vector_);
  } else if (field(kDeviceStatus, 1)) {
    set_status(static_cast<uint8_t>(value));
  } else if (field(kQueueSelect, 2)) {
    queue_select_ = static_cast<uint16_t>(value);
  } else if (queue_select_ < num_queues_ && !(status_ & kStatusDriverOk)) {
    // Queue setup happens before DRIVER_OK (§3.1.1); later writes are ignored.
    QueueState& q = queues_[queue_select_];
    if (field(kQueueSize, 2)) {
      uint16_t s = static_cast<uint16_t>(value);
      if (s != 0 && s <= device_->queue_max_size()) q.size = s;
    } else if (field(kQueueMsixVector, 2)) {
      q.msix_vector = checked_vector(static_cast<uint16_t>(value));
    } else if (field(kQueueEnable, 2)) {
      if (value == 1) q.ready = true;  // §4.1.4.3.2: the driver never writes 0
    } else {
      for (uint64_t* reg : {&q.desc, &q.avail, &q.used}) {
        uint32_t at = reg == &q.desc ? kQueueDesc : reg == &q.avail ? kQueueDriver : kQueueDevice;
        if (field(at, 8)) *reg = value;
        if (field(at, 4)) *reg = (*reg & ~uint64_t{0xffffffff}) | v32;
        if (field(at + 4, 4)) *reg = (*reg & 0xffffffff) | uint64_t{v32} << 32;
      }
    }
  }
}

void VirtioPciDevice::set_status(uint8_t status) {
  if (status == 0) {
    reset_locked();
    return;
  }
  // The driver only adds bits (§2.1.2); anything else is ignored.
  if ((status & status_) != status_) {
    std::fprintf(stderr, "virtio-pci: driver cleared status bits (0x%x -> 0x%x), ignored\n",
                 status_, status);
    return;
  }
  uint8_t added = status & ~status_;
  uint8_t next = status_;
  if (added & kStatusFailed) next |= kStatusFailed;
  if (added & kStatusAcknowledge) next |= kStatusAcknowledge;
  if ((added & kStatusDriver) && (next & kStatusAcknowledge)) next |= kStatusDriver;
  if ((added & kStatusFeaturesOk) && (next & kStatusDriver)) {
    // §3.1.1 step 5: accept the subset only if VERSION_1 is in it and the device agrees.
    uint64_t f = driver_features_;
    if ((f & feature(kFVersion1)) && (f & ~offered_features()) == 0 &&
        device_->accept_features(f)) {
      next |= kStatusFeaturesOk;
    } else {
      std::fprintf(stderr, "virtio-pci: features 0x%llx refused\n",
                   static_cast<unsigned long long>(f));
    }
  }
  if ((added & kStatusDriverOk) && (next & kStatusFeaturesOk)) next |= kStatusDriverOk;
  status_ = next;
  if ((next & kStatusDriverOk) && !active_) activate_locked();
}

void VirtioPciDevice::activate_locked() {
  ActivateArgs args;
  args.mem = &mem_;
  args.features = driver_features_;
  args.irq = this;
  bool event_idx = driver_features_ & feature(kFRingEventIdx);
  bool indirect = driver_features_ & feature(kFRingIndirectDesc);
  for (uint16_t i = 0; i < num_queues_; ++i) {
    active_vectors_[i] = queues_[i].msix_vector;
    if (!queues_[i].ready) continue;
    QueueConfig qc{queues_[i].size, queues_[i].desc, queues_[i].avail, queues_[i].used};
    auto vq = Virtqueue::create(mem_, qc, event_idx, indirect);
    if (!vq) {
      device_error(img::strfmt("queue %u: %s", i, vq.error().to_string().c_str()));
      return;
    }
    args.queues.push_back(ActiveQueue{i, std::move(*vq), kick_fds_[i]});
  }
  auto s = device_->activate(std::move(args));
  if (!s) {
    device_error("activate: " + s.error().to_string());
    return;
  }
  active_ = true;
}

void VirtioPciDevice::reset_locked() {
  if (active_) device_->reset();
  active_ = false;
  status_ = 0;
  needs_reset_.store(false);
  isr_.store(0);
  device_feature_select_ = driver_feature_select_ = 0;
  driver_features_ = 0;
  queue_select_ = 0;
  config_vector_ = kMsiNoVectorValue;
  active_config_vector_.store(kMsiNoVectorValue);
  for (auto& q : queues_) q = QueueState{.size = device_->queue_max_size()};
  if (reregister_pending_) register_notifiers(bar_addr_);
}

void VirtioPciDevice::raise(uint16_t vector, uint8_t isr_bit) {
  isr_.fetch_or(isr_bit);
  if (vector != kMsiNoVectorValue) msix_.notify(vector);
}

void VirtioPciDevice::signal_used(uint16_t queue) {
  if (queue < active_vectors_.size()) raise(active_vectors_[queue], 1);
}

void VirtioPciDevice::signal_config_change() {
  config_generation_.fetch_add(1);
  raise(active_config_vector_.load(), 2);
}

void VirtioPciDevice::device_error(const std::string& why) {
  std::fprintf(stderr, "virtio-pci: device needs reset: %s\n", why.c_str());
  needs_reset_.store(true);
  raise(active_config_vector_.load(), 2);
}

}  // namespace vmm::virtio
