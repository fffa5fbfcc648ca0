// PciBus: PCI bus 0 behind configuration mechanism #1 (PCI Local Bus 3.0 §3.2.2.3.2): the
// CONFIG_ADDRESS register at port 0xCF8 and the CONFIG_DATA window at 0xCFC-0xCFF (byte, word and
// dword accesses at 0xCFC+n). Insert the PciBus into the port-I/O Bus at 0xCF8 with length 8.
// Slot 0 holds a host bridge; add_device() puts each further device in the next free slot,
// allocates its memory BARs (naturally aligned) from the MMIO window given to the constructor,
// and maps them into the MMIO Bus while the device's command register enables memory decoding.
// A BAR the guest moves is remapped and the device told (bar_placed).
//
// Thread-safety: bus_read/bus_write and add_device are safe from any thread (one lock).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>

#include "devices/bus.h"
#include "pci/pci_device.h"

namespace vmm {

class PciBus : public BusDevice {
 public:
  static constexpr uint64_t kConfigPort = 0xcf8;
  static constexpr uint64_t kConfigPortLen = 8;
  static constexpr unsigned kSlots = 32;

  // MMIO BARs are allocated from [mmio_start, mmio_end), e.g. [0xC0000000, 0xFEC00000).
  PciBus(Bus& mmio, uint64_t mmio_start, uint64_t mmio_end);
  ~PciBus() override;

  // Assigns the next free slot; fails if none is left or the BARs do not fit the window.
  img::Status add_device(std::shared_ptr<PciDevice> dev);
  // The device in slot (nullptr if none).
  std::shared_ptr<PciDevice> device(unsigned slot);

  // Port I/O, offset 0..7 from 0xCF8.
  void bus_read(uint64_t offset, std::span<uint8_t> data) override;
  void bus_write(uint64_t offset, std::span<const uint8_t> data) override;

  // A machine reset: every function's config space back to power-on (decoding off, so its BARs
  // leave the MMIO bus; they are mapped again where the guest enables them), then the function
  // resets itself (PciDevice::reset_function).
  void reset() override;

  // Direct configuration access to bus 0 (tests, and firmware-like setup by the VMM).
  void config_read(unsigned slot, uint32_t offset, std::span<uint8_t> data);
  void config_write(unsigned slot, uint32_t offset, std::span<const uint8_t> data);

 private:
  struct Mapping {
    bool mapped = false;
    uint64_t addr = 0;    // where the BAR is inserted in the MMIO bus
    uint64_t placed = 0;  // last address reported through bar_placed
  };
  // REQUIRES: mu_ held.
  void config_read_locked(unsigned slot, uint32_t offset, std::span<uint8_t> data);
  void config_write_locked(unsigned slot, uint32_t offset, std::span<const uint8_t> data);
  // Brings the MMIO mappings of slot's BARs in line with its config space.
  void update_mappings(unsigned slot);
  // Decodes CONFIG_ADDRESS: slot and register offset for bus 0 function 0, or false.
  bool decode_address(uint32_t* slot, uint32_t* reg) const;

  Bus& mmio_;
  const uint64_t mmio_end_;
  std::mutex mu_;
  uint64_t next_mmio_;
  uint32_t config_address_ = 0;
  std::array<std::shared_ptr<PciDevice>, kSlots> slots_{};
  std::array<std::array<Mapping, PciConfigSpace::kNumBars>, kSlots> maps_{};
};

}  // namespace vmm
