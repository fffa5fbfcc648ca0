// Msix: a PCI MSI-X capability (PCI Local Bus 3.0 §6.8.2) with its vector table and pending bit
// array (PBA), both living in one of the device's memory BARs. An entry the guest has programmed
// and unmasked (with MSI-X enabled and the function not masked) is routed through
// InterruptController::add_msi / update_msi; raising its vector then writes the route's irqfd, so
// the interrupt reaches the guest without a trip through a vCPU thread. A vector raised while it
// is masked sets its pending bit and fires when it is unmasked (§6.8.2.9).
//
// Thread-safety: every method is safe from any thread (one internal mutex); notify() is the hot
// path, called from device I/O threads.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "devices/irq.h"
#include "pci/pci_config.h"

namespace vmm {

class Msix {
 public:
  static constexpr uint8_t kCapId = 0x11;
  static constexpr uint32_t kEntrySize = 16;
  static constexpr uint16_t kControlEnable = 1u << 15;
  static constexpr uint16_t kControlFunctionMask = 1u << 14;

  Msix(InterruptController& ic, uint16_t vectors);
  ~Msix();
  Msix(const Msix&) = delete;
  Msix& operator=(const Msix&) = delete;

  uint16_t vectors() const { return vectors_; }
  uint64_t table_bytes() const { return uint64_t{vectors_} * kEntrySize; }
  uint64_t pba_bytes() const { return (uint64_t{vectors_} + 63) / 64 * 8; }

  // Adds the capability to cfg: the table at table_offset and the PBA at pba_offset in BAR bar
  // (offsets 8-byte aligned).
  img::Status add_capability(PciConfigSpace& cfg, uint8_t bar, uint32_t table_offset,
                             uint32_t pba_offset);
  // A config write touched the capability: picks up the enable and function-mask bits.
  void config_written(const PciConfigSpace& cfg, uint32_t offset, uint32_t len);

  // MMIO on the table and on the PBA; offsets relative to each.
  void table_read(uint64_t offset, std::span<uint8_t> data);
  void table_write(uint64_t offset, std::span<const uint8_t> data);
  void pba_read(uint64_t offset, std::span<uint8_t> data);

  // A machine reset: disabled, every entry zero and masked, nothing pending, the routes gone (the
  // capability's control word is the config space's, which the bus puts back).
  void reset();

  // Raises vector (or marks it pending). Out-of-range vectors are ignored.
  void notify(uint16_t vector);
  bool enabled() const;
  bool pending(uint16_t vector) const;

 private:
  struct Route {
    InterruptController::Msi msi;
    uint64_t address;
    uint32_t data;
  };
  uint64_t entry_address(uint16_t v) const;
  uint32_t entry_data(uint16_t v) const;
  bool entry_masked(uint16_t v) const;
  // REQUIRES: mu_ held. Routes v if deliverable and fires it if pending.
  void sync_vector(uint16_t v);
  void fire(const Route& r) const;

  InterruptController& ic_;
  const uint16_t vectors_;
  uint8_t cap_offset_ = 0;
  mutable std::mutex mu_;
  bool enabled_ = false;
  bool function_masked_ = false;
  std::vector<uint8_t> table_;  // vectors_ * 16 bytes, the guest's view
  std::vector<bool> pending_;
  std::vector<std::optional<Route>> routes_;
};

}  // namespace vmm
