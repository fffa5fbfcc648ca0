// The Intel MultiProcessor Specification 1.4 table (chapter 4): the floating pointer structure
// and the configuration table with one processor entry per vCPU, an ISA bus, the IOAPIC, the 16
// ISA interrupts wired identity to IOAPIC pins, and LINT0 = ExtINT / LINT1 = NMI. It sits in the
// EBDA, where Linux's MP-table scan looks. (Debian's kernel uses ACPI instead; see acpi.h.)
//
// Thread-safety: pure function.
#pragma once

#include <cstdint>
#include <vector>

#include "img/status.h"

namespace vmm {

inline constexpr uint32_t kMaxCpus = 32;  // fits the 1 KiB EBDA and an 8-bit APIC id space

// The bytes to copy to guest-physical `base` (floating pointer first).
img::Result<std::vector<uint8_t>> build_mptable(uint32_t cpus, uint64_t base);

// Sum of bytes mod 256 (MP and ACPI checksums make the total zero).
uint8_t byte_sum(const uint8_t* p, size_t n);

}  // namespace vmm
