// The VMM's two address spaces for device access: port I/O and MMIO. A vCPU exit (KVM_EXIT_IO,
// KVM_EXIT_MMIO) is dispatched to the device whose range holds the address.
//
// Thread-safety: Bus lookups are safe from any vCPU thread once the machine runs (the map is
// built before the first KVM_RUN and not changed afterwards, except through insert() under the
// bus lock). Devices lock their own state.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>

#include "img/status.h"

namespace vmm {

class BusDevice {
 public:
  virtual ~BusDevice() = default;
  // offset is relative to the base the device was inserted at; data.size() is 1, 2, 4 or 8.
  // A read must fill all of data (0xff for nothing there is the PC convention).
  virtual void bus_read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void bus_write(uint64_t offset, std::span<const uint8_t> data) = 0;
  // A machine reset (reboot in place): back to the power-on state, interrupt lines lowered.
  // Called on the main thread with every vCPU parked. State that outlives a power cycle on a PC
  // (the RTC's CMOS RAM and clock) stays.
  virtual void reset() {}
};

class Bus {
 public:
  // Refuses a range that overlaps one already inserted, or that wraps.
  img::Status insert(uint64_t base, uint64_t len, std::shared_ptr<BusDevice> dev);
  img::Status remove(uint64_t base);
  // False if no device covers [addr, addr+len).
  bool read(uint64_t addr, std::span<uint8_t> data);
  bool write(uint64_t addr, std::span<const uint8_t> data);

 private:
  struct Range {
    uint64_t len;
    std::shared_ptr<BusDevice> dev;
  };
  // Returns the device and its base for addr, or nullptr.
  std::shared_ptr<BusDevice> find(uint64_t addr, uint64_t len, uint64_t* base);
  std::mutex mu_;
  std::map<uint64_t, Range> ranges_;  // base -> range
};

}  // namespace vmm
