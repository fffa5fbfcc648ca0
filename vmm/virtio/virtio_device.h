// VirtioDevice: what a virtio device model (blk, net, rng, ...) gives the transport, and what the
// transport gives it back (Firecracker-style: the transport owns the device). The transport does
// feature negotiation, the status state machine and queue setup (virtio 1.2 §3.1); at DRIVER_OK
// it hands the device its validated queues, each with the eventfd that the driver's notifications
// land on, and an interface to raise interrupts. reset() must stop all work on the queues before
// it returns (the transport then forgets them).
//
// Thread-safety: the transport calls every VirtioDevice method under its own lock (one at a
// time). VirtioInterrupt methods are safe from any thread (the device's I/O threads call them).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "img/status.h"
#include "kvm/guest_memory.h"
#include "virtio/queue.h"

namespace vmm::virtio {

class VirtioInterrupt {
 public:
  virtual ~VirtioInterrupt() = default;
  // Used buffers were published on queue (§2.7.10 suppression already applied by the caller).
  virtual void signal_used(uint16_t queue) = 0;
  // The device configuration changed: bumps config_generation and raises the config vector.
  virtual void signal_config_change() = 0;
  // The device met an error it cannot recover from without a reset (a broken ring): sets
  // DEVICE_NEEDS_RESET (§2.1.1) and raises the config vector. The device stops the queue itself.
  virtual void device_error(const std::string& why) = 0;
};

struct ActiveQueue {
  uint16_t index = 0;  // queue number as the driver numbers it
  Virtqueue queue;
  int kick_fd = -1;  // eventfd signalled on each driver notification; the transport owns it
};

struct ActivateArgs {
  const GuestMemory* mem = nullptr;
  uint64_t features = 0;            // negotiated
  std::vector<ActiveQueue> queues;  // the enabled queues
  VirtioInterrupt* irq = nullptr;
};

class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;
  virtual uint16_t device_type() const = 0;  // §5: 2 = block
  // Device-specific feature bits; the transport adds VERSION_1, INDIRECT_DESC and EVENT_IDX.
  virtual uint64_t device_features() const = 0;
  // Extra checks on the driver's feature set before FEATURES_OK is accepted.
  virtual bool accept_features(uint64_t features) const {
    (void)features;
    return true;
  }
  virtual uint16_t num_queues() const = 0;
  virtual uint16_t queue_max_size() const = 0;
  // Device-specific configuration space (§4.1.4.6), read and written by the driver.
  virtual uint32_t config_size() const = 0;
  virtual void read_config(uint32_t offset, std::span<uint8_t> data) const = 0;
  virtual void write_config(uint32_t offset, std::span<const uint8_t> data) = 0;
  // DRIVER_OK: start serving the queues.
  virtual img::Status activate(ActivateArgs args) = 0;
  // Stop serving (complete or drain what is in flight) and forget the queues.
  virtual void reset() = 0;
  // VM pause while active: take no new chains, finish (drain) what is in flight and make it
  // durable; resume() serves the queues again. The defaults suit a device with no queue server.
  virtual img::Status pause() { return {}; }
  virtual void resume() {}
};

}  // namespace vmm::virtio
