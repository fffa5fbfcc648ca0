// Enough of the i8042 keyboard controller for Linux with no keyboard or mouse attached
// (ports 0x60 data, 0x64 status/command; command set from the IBM PC/AT technical reference as
// Linux's drivers/input/serio/i8042.c uses it). Command 0xFE (pulse output line 0: CPU reset)
// and clearing bit 0 of the output port end the VM through the reset callback: the guest's
// `reboot` ends the VMM with exit code 0.
//
// Thread-safety: locked; the reset callback runs without the lock held.
#pragma once

#include <functional>
#include <mutex>
#include <optional>

#include "devices/bus.h"

namespace vmm {

class I8042 : public BusDevice {
 public:
  static constexpr uint16_t kBase = 0x60;  // covers 0x60..0x64; 0x61 (port B) reads as 0
  static constexpr uint16_t kLen = 5;
  static constexpr uint8_t kStatusObf = 0x01, kStatusSys = 0x04, kStatusCmd = 0x08;
  static constexpr uint8_t kCmdReset = 0xfe;

  explicit I8042(std::function<void()> on_reset) : on_reset_(std::move(on_reset)) {}
  void bus_read(uint64_t offset, std::span<uint8_t> data) override;
  void bus_write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  // Returns true when the write asks for a CPU reset.
  bool command(uint8_t cmd);
  bool data_write(uint8_t v);

  std::mutex mu_;
  std::function<void()> on_reset_;
  std::optional<uint8_t> out_;  // byte waiting in the output buffer
  uint8_t pending_cmd_ = 0;     // command waiting for its data byte
  uint8_t cmd_byte_ = 0x45;     // controller configuration byte (interrupts off below)
  uint8_t status_flags_ = kStatusSys;
};

}  // namespace vmm
