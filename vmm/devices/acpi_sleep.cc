#include "devices/acpi_sleep.h"

#include "x86/dsdt.h"

namespace vmm {

void AcpiSleep::bus_read(uint64_t, std::span<uint8_t> data) {
  for (auto& b : data) b = 0;
}

void AcpiSleep::bus_write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset != 0 || data.empty()) return;  // status writes only clear WAK_STS: nothing to do
  uint8_t v = data[0];
  if ((v & kSlpEn) && ((v >> kSlpTypShift) & 7) == kAcpiS5SleepType && on_power_off_) on_power_off_();
}

}  // namespace vmm
