// VirtioPciDevice: the virtio-pci modern transport (virtio 1.2 §4.1) around a VirtioDevice. One
// 64-bit memory BAR (BAR 0) holds the four virtio structures, each announced by a vendor PCI
// capability (§4.1.4), plus the MSI-X table and PBA:
//
//   0x0000 common configuration (§4.1.4.3)   0x3000 notifications, 4 bytes a queue (§4.1.4.4)
//   0x1000 ISR status (§4.1.4.5)             0x4000 MSI-X table
//   0x2000 device-specific config (§4.1.4.6) 0x5000 MSI-X PBA
//
// Driver notifications go to one eventfd per queue: an ioeventfd registered at the queue's
// notify address once the BAR is placed (no exit to the VMM), and the same eventfd is signalled
// by hand when a notify write arrives as a plain MMIO exit. Interrupts leave through MSI-X irqfds:
// a config vector and one vector per queue, as the driver maps them.
//
// Thread-safety: BAR accesses from any vCPU thread are serialized by an internal lock; the PciBus
// serializes config-space accesses. The VirtioInterrupt side is safe from the device's threads.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "devices/irq.h"
#include "kvm/guest_memory.h"
#include "pci/msix.h"
#include "pci/pci_device.h"
#include "virtio/virtio_device.h"

namespace vmm::virtio {

class VirtioPciDevice final : public PciDevice, private VirtioInterrupt {
 public:
  static constexpr uint64_t kCommonOffset = 0x0000;
  static constexpr uint64_t kIsrOffset = 0x1000;
  static constexpr uint64_t kDeviceCfgOffset = 0x2000;
  static constexpr uint64_t kNotifyOffset = 0x3000;
  static constexpr uint32_t kNotifyMultiplier = 4;
  static constexpr uint64_t kMsixTableOffset = 0x4000;
  static constexpr uint64_t kMsixPbaOffset = 0x5000;
  static constexpr uint64_t kBarSize = 0x8000;
  static constexpr unsigned kBar = 0;

  // mem, ic and io must outlive the device.
  static img::Result<std::shared_ptr<VirtioPciDevice>> create(std::unique_ptr<VirtioDevice> dev,
                                                              const GuestMemory& mem,
                                                              InterruptController& ic,
                                                              IoEventRegistry& io);
  ~VirtioPciDevice() override;

  void config_written(uint32_t offset, uint32_t len) override;
  void bar_read(unsigned bar, uint64_t offset, std::span<uint8_t> data) override;
  void bar_write(unsigned bar, uint64_t offset, std::span<const uint8_t> data) override;
  void bar_placed(unsigned bar, uint64_t addr) override;
  // A machine reset: the device reset as a driver's status write of 0 does it (§2.4), and the
  // MSI-X table with it.
  void reset_function() override;

  uint8_t device_status() const;
  // VM pause/resume (VirtioDevice::pause): a device the driver has not started has nothing to do.
  img::Status pause();
  void resume();
  VirtioDevice& device() { return *device_; }
  // Runs fn on the device under the transport's lock, so that it cannot race the driver's
  // accesses, a reset or an activation (a disk resize from the control socket). vCPUs touching
  // this device's BAR wait meanwhile.
  template <class Fn>
  auto with_device(Fn&& fn) {
    std::lock_guard lock(mu_);
    return fn(*device_);
  }
  Msix& msix() { return msix_; }

  VirtioPciDevice(std::unique_ptr<VirtioDevice> dev, const GuestMemory& mem,
                  InterruptController& ic, IoEventRegistry& io);  // use create()

 private:
  struct QueueState {
    uint16_t size = 0;
    bool ready = false;
    uint16_t msix_vector = kMsiNoVectorValue;
    uint64_t desc = 0, avail = 0, used = 0;
  };
  static constexpr uint16_t kMsiNoVectorValue = 0xffff;

  img::Status init();
  // VirtioInterrupt.
  void signal_used(uint16_t queue) override;
  void signal_config_change() override;
  void device_error(const std::string& why) override;
  void raise(uint16_t vector, uint8_t isr_bit);

  // REQUIRES: mu_ held.
  uint64_t common_read(uint32_t offset, uint32_t size);
  void common_write(uint32_t offset, uint32_t size, uint64_t value);
  void set_status(uint8_t status);
  void reset_locked();
  void activate_locked();
  void register_notifiers(uint64_t bar_addr);
  uint16_t checked_vector(uint16_t v) const;
  uint64_t offered_features() const;

  std::unique_ptr<VirtioDevice> device_;
  const GuestMemory& mem_;
  IoEventRegistry& io_;
  Msix msix_;
  const uint16_t num_queues_;

  mutable std::mutex mu_;
  uint8_t status_ = 0;
  bool active_ = false;
  uint32_t device_feature_select_ = 0;
  uint32_t driver_feature_select_ = 0;
  uint64_t driver_features_ = 0;
  uint16_t queue_select_ = 0;
  uint16_t config_vector_ = kMsiNoVectorValue;
  std::vector<QueueState> queues_;
  std::vector<int> kick_fds_;
  std::vector<bool> kick_registered_;
  bool reregister_pending_ = false;
  uint64_t bar_addr_ = 0;

  // Read by the device's I/O threads.
  std::atomic<bool> needs_reset_{false};
  std::atomic<uint8_t> isr_{0};
  std::atomic<uint8_t> config_generation_{0};
  std::atomic<uint16_t> active_config_vector_{kMsiNoVectorValue};
  std::vector<uint16_t> active_vectors_;  // fixed while active
};

}  // namespace vmm::virtio
