// PciConfigSpace: a type-0 PCI configuration header (PCI Local Bus Specification 3.0 §6.1) with
// memory BARs that follow the sizing protocol (§6.2.5.1: write all ones, read back the size mask),
// a command register whose memory-enable bit gates the BARs, and a capability list (§6.7).
// Writes change only the bits a write mask marks writable, so a guest cannot rewrite the IDs or
// the capability chain.
//
// Thread-safety: not thread-safe; the PciBus serializes config accesses under its lock. Only
// memory_enabled() may be read from any thread (the BAR windows ask it on every MMIO access).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <span>

#include "img/status.h"

namespace vmm {

struct PciIds {
  uint16_t vendor = 0;
  uint16_t device = 0;
  uint32_t class_code = 0;  // base class << 16 | subclass << 8 | prog-if
  uint8_t revision = 0;
  uint16_t subsystem_vendor = 0;
  uint16_t subsystem = 0;
};

class PciConfigSpace {
 public:
  static constexpr uint32_t kSize = 256;
  static constexpr unsigned kNumBars = 6;
  // Register offsets (PCI 3.0 §6.1).
  static constexpr uint32_t kVendorId = 0x00;
  static constexpr uint32_t kCommand = 0x04;
  static constexpr uint32_t kStatus = 0x06;
  static constexpr uint32_t kRevision = 0x08;
  static constexpr uint32_t kHeaderType = 0x0e;
  static constexpr uint32_t kBar0 = 0x10;
  static constexpr uint32_t kSubsystemVendor = 0x2c;
  static constexpr uint32_t kCapPointer = 0x34;
  static constexpr uint32_t kInterruptLine = 0x3c;
  static constexpr uint16_t kCommandMemory = 1u << 1;
  static constexpr uint16_t kStatusCapList = 1u << 4;

  explicit PciConfigSpace(const PciIds& ids);

  // Reads len (1, 2 or 4) bytes at offset; bytes past the end read as 0xff.
  void read(uint32_t offset, std::span<uint8_t> data) const;
  uint32_t read32(uint32_t offset) const;
  // A guest write: only writable bits change; BAR registers keep their size alignment and type.
  void write(uint32_t offset, std::span<const uint8_t> data);

  // Device setup (before the device is added to a bus).
  // A memory BAR of size bytes (a power of two, at least 16); a 64-bit BAR also takes index+1.
  img::Status add_memory_bar(unsigned index, uint64_t size, bool is64, bool prefetchable);
  // Appends a capability; body is everything after the 2-byte (id, next) header, and
  // writable_body marks which of its bits the guest may change (empty: read-only).
  // Returns the capability's offset.
  img::Result<uint8_t> add_capability(uint8_t id, std::span<const uint8_t> body,
                                      std::span<const uint8_t> writable_body = {});

  // BAR state. Sizes are 0 for unused BARs and for the upper half of a 64-bit BAR.
  uint64_t bar_size(unsigned index) const { return index < kNumBars ? bars_[index].size : 0; }
  uint64_t bar_address(unsigned index) const;
  void set_bar_address(unsigned index, uint64_t addr);  // the bus's initial placement
  // The power-on state: recorded by the bus once the BARs are placed; reset() (a machine reset)
  // puts every byte back, so the command register disables decoding again.
  void save_power_on_state() { power_on_ = bytes_; }
  void reset();

  uint16_t command() const { return load16(kCommand); }
  bool memory_enabled() const { return memory_enabled_.load(std::memory_order_acquire); }

  // Direct access for the device's own registers (capability bodies it keeps up to date).
  uint8_t byte(uint32_t offset) const { return bytes_[offset % kSize]; }
  uint16_t load16(uint32_t offset) const;
  uint32_t load32(uint32_t offset) const;
  void store16(uint32_t offset, uint16_t v);
  void store32(uint32_t offset, uint32_t v);

 private:
  struct Bar {
    uint64_t size = 0;
    bool is64 = false;
    bool upper = false;  // the high dword of the 64-bit BAR before it
    uint8_t flags = 0;   // low 4 bits of the register: type and prefetchable
  };
  bool is_bar_offset(uint32_t offset) const { return offset >= kBar0 && offset < kBar0 + 24; }
  void write_bar_dword(unsigned index, uint32_t value);

  std::array<uint8_t, kSize> bytes_{};
  std::array<uint8_t, kSize> wmask_{};
  std::array<uint8_t, kSize> power_on_{};
  std::array<Bar, kNumBars> bars_{};
  uint8_t last_cap_ = 0;
  uint32_t next_cap_ = 0x40;
  std::atomic<bool> memory_enabled_{false};
};

}  // namespace vmm
