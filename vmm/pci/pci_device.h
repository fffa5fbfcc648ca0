// PciDevice: what the PciBus needs from a PCI function: its configuration space (IDs, BARs,
// capabilities), a hook for config writes that touch device-owned registers (MSI-X control), and
// the MMIO handlers behind its memory BARs.
//
// Thread-safety: the PciBus serializes config_space() accesses and config_written() under its own
// lock. bar_read/bar_write come from any vCPU thread; the device locks its own state.
// bar_placed() is called under the bus lock.
#pragma once

#include <cstdint>
#include <span>

#include "pci/pci_config.h"

namespace vmm {

class PciDevice {
 public:
  virtual ~PciDevice() = default;

  PciConfigSpace& config_space() { return config_; }
  const PciConfigSpace& config_space() const { return config_; }

  // A guest config write of len bytes at offset has been applied to config_space().
  virtual void config_written(uint32_t offset, uint32_t len) {
    (void)offset;
    (void)len;
  }
  // MMIO inside memory BAR bar, offset from its base; data.size() is 1, 2, 4 or 8.
  virtual void bar_read(unsigned bar, uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void bar_write(unsigned bar, uint64_t offset, std::span<const uint8_t> data) = 0;
  // The bus placed BAR bar at guest-physical addr (when added, and when the guest moved it).
  virtual void bar_placed(unsigned bar, uint64_t addr) {
    (void)bar;
    (void)addr;
  }
  // A machine reset: the bus has put the config space back to its power-on state; the device
  // resets what it keeps itself (MSI-X table, device registers). Called under the bus lock.
  virtual void reset_function() {}

 protected:
  explicit PciDevice(const PciIds& ids) : config_(ids) {}

 private:
  PciConfigSpace config_;
};

}  // namespace vmm
