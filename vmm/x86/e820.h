// The guest's physical memory map as the BIOS e820 call would report it (ACPI spec 6.5,
// section 15 "System Address Map Interfaces"): low RAM, the EBDA and BIOS areas reserved,
// RAM from 1 MiB up to the PCI hole, and RAM above 4 GiB. The PCI hole is left out of the map
// (a gap), which is how Linux finds room for BARs (arch/x86/kernel/e820.c, e820__setup_pci_gap).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <vector>

namespace vmm {

struct E820Entry {
  static constexpr uint32_t kRam = 1;
  static constexpr uint32_t kReserved = 2;
  uint64_t addr;
  uint64_t size;
  uint32_t type;
};

// REQUIRES: ram_size >= 2 MiB.
std::vector<E820Entry> build_e820(uint64_t ram_size);

}  // namespace vmm
