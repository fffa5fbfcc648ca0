// Minimal ACPI tables (ACPI 6.5, chapter 5.2) so that Linux finds the vCPUs and the IOAPIC:
// RSDP (5.2.5) -> XSDT (5.2.8) -> FADT (5.2.9, hardware-reduced, revision 6, with the 8042 flag)
// -> DSDT (5.2.11.1: the PCI root bridge, x86/dsdt.h), and MADT (5.2.12) with one Processor Local APIC per vCPU, the
// IOAPIC and the LINT1 NMI. Debian's kernel has no MP-table parser: without the MADT it runs
// on one CPU.
//
// Thread-safety: pure function.
#pragma once

#include <cstdint>
#include <vector>

#include "img/status.h"

namespace vmm {

struct AcpiTables {
  std::vector<uint8_t> bytes;  // to copy to guest-physical `base`; the RSDP is at base
  uint64_t rsdp = 0;
};

img::Result<AcpiTables> build_acpi_tables(uint32_t cpus, uint64_t base);

}  // namespace vmm
