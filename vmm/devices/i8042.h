// Enough of the i8042 keyboard controller for Linux with no keyboard or mouse attached
// (ports 0x60 data, 0x64 status/command; command set from the IBM PC/AT technical reference as
// Linux's drivers/input/serio/i8042.c uses it). Command 0xFE (pulse output line 0: CPU reset)
// and clearing bit 0 of the output port call the reset callback: the guest's `reboot`, which
// the machine turns into a reset in place or the end of the VM (--on-reboot).
//
// A keyboard sits behind it, enough for the VMM to press Ctrl-Alt-Del (the control socket's
// shutdown, as Firecracker's SendCtrlAltDel): it answers the commands Linux's atkbd probes with
// (reset, get ID, set LEDs/rate/scancode set, enable) and queues its bytes behind the output
// buffer, raising IRQ 1 for each byte when the configuration byte enables keyboard interrupts.
// Scancodes are set 1 when the configuration byte asks for translation (bit 6, the PC default),
// else set 2.
//
// Thread-safety: locked; the reset and irq callbacks run without the lock held.
#pragma once

#include <deque>
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

  static constexpr uint32_t kIrq = 1;
  static constexpr size_t kMaxQueued = 64;  // keyboard bytes waiting; more are dropped

  // irq(level) drives ISA IRQ 1; it may be empty (no interrupts: the guest polls).
  explicit I8042(std::function<void()> on_reset, std::function<void(bool)> irq = {})
      : on_reset_(std::move(on_reset)), irq_(std::move(irq)) {}
  void bus_read(uint64_t offset, std::span<uint8_t> data) override;
  void bus_write(uint64_t offset, std::span<const uint8_t> data) override;
  // The controller and keyboard as at power-on: buffers emptied, configuration byte 0x45.
  void reset() override;

  // Presses and releases Ctrl-Alt-Del, from any thread.
  void press_ctrl_alt_del();

 private:
  // Returns true when the write asks for a CPU reset.
  bool command(uint8_t cmd);
  bool data_write(uint8_t v);
  void keyboard_command(uint8_t v);
  // Moves the next keyboard byte into an empty output buffer; true if it did (raise IRQ 1).
  bool refill();
  void pulse_irq();

  std::mutex mu_;
  std::function<void()> on_reset_;
  std::optional<uint8_t> out_;  // byte waiting in the output buffer
  uint8_t pending_cmd_ = 0;     // command waiting for its data byte
  uint8_t cmd_byte_ = 0x45;     // controller configuration byte (interrupts off below)
  uint8_t status_flags_ = kStatusSys;
  std::function<void(bool)> irq_;
  std::deque<uint8_t> kbd_;      // keyboard bytes behind the output buffer
  uint8_t kbd_pending_cmd_ = 0;  // keyboard command waiting for its parameter byte
};

}  // namespace vmm
