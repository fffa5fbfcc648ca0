// The hardware-reduced ACPI sleep registers (ACPI 6.5, 4.8.3.7 and 4.8.3.8) that the FADT names
// (SLEEP_CONTROL_REG, SLEEP_STATUS_REG): how a guest with ACPI powers the machine off. Linux's
// `poweroff` evaluates \_S5 (our DSDT says SLP_TYP 5) and writes SLP_TYP << 2 | SLP_EN (0x34) to
// the control register; vmm then ends through the power-off callback, as a real machine loses
// power. Other sleep states (S1-S4) are not offered in the DSDT; a write asking for one is
// ignored, so the guest sees a machine that did not sleep and carries on.
//
//   port kBase + 0: sleep control (write-only; reads 0)
//   port kBase + 1: sleep status  (WAK_STS, bit 7: reads 0 while the machine runs)
//
// Thread-safety: stateless; the callback may run on any vCPU thread.
#pragma once

#include <functional>

#include "devices/bus.h"

namespace vmm {

class AcpiSleep : public BusDevice {
 public:
  static constexpr uint16_t kBase = 0x600;  // where QEMU's PIIX4/ICH9 PM blocks sit too
  static constexpr uint16_t kLen = 2;
  static constexpr uint8_t kSlpEn = 0x20;      // 4.8.3.7: SLP_EN, bit 5
  static constexpr uint8_t kSlpTypShift = 2;   // SLP_TYPx, bits 4:2

  explicit AcpiSleep(std::function<void()> on_power_off) : on_power_off_(std::move(on_power_off)) {}
  void bus_read(uint64_t offset, std::span<uint8_t> data) override;
  void bus_write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  std::function<void()> on_power_off_;
};

}  // namespace vmm
