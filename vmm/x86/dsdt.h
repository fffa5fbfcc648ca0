// The DSDT's AML (ACPI 6.5 chapter 20): the PCI root bridge, so that a Linux with ACPI on finds
// our PCI devices. With ACPI, Linux enumerates PCI only behind host bridges the namespace
// describes (measured: Linux 6.1 with CONFIG_ACPI saw no PCI device behind an empty DSDT).
//
//   Scope (\_SB) { Device (PCI0) {
//     _HID PNP0A08 (PCI Express root), _CID PNP0A03 (PCI root), _ADR 0, _SEG 0, _UID 0, _BBN 0
//     _CRS: bus 0; I/O 0xCF8-0xCFF (config ports, consumed); I/O windows 0-0xCF7 and
//           0xD00-0xFFFF; memory window [mmio_start, mmio_end) where vmm places the BARs
//   }
//   Device (COM1) { _HID PNP0501, _UID 0, _CRS: I/O 0x3F8-0x3FF, GSI 4 edge active-high }
//   }
//   Name (\_S5, Package () { 5, 0 }): SLP_TYP for poweroff through the FADT's sleep registers
//
// No _PRT: our PCI devices interrupt through MSI-X only. Config space is reached through ports
// 0xCF8/0xCFC (no MCFG).
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace vmm {

// The SLP_TYP of \_S5 (soft off), as the sleep control register (devices/acpi_sleep.h) expects.
constexpr uint8_t kAcpiS5SleepType = 5;

struct PciRootWindows {
  uint64_t mmio_start;  // [mmio_start, mmio_end): 32-bit BAR window
  uint64_t mmio_end;
};

// The DSDT body (the definition block after the 36-byte table header).
std::vector<uint8_t> build_dsdt_aml(const PciRootWindows& w);

// 20.2.4 PkgLength encoding of a package whose contents (after the PkgLength) are n bytes.
std::vector<uint8_t> aml_pkg_length(size_t n);

}  // namespace vmm
