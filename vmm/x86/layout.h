// Where the VMM puts boot structures in guest-physical memory (all below 1 MiB, inside the
// first e820 RAM range or the reserved BIOS areas the e820 map declares).
//
// Thread-safety: constants only.
#pragma once

#include <cstdint>

namespace vmm::layout {

inline constexpr uint64_t kGdt = 0x500;           // boot GDT, 4 entries
inline constexpr uint64_t kIdt = 0x520;           // empty IDT (limit 0)
inline constexpr uint64_t kPvhStartInfo = 0x6000;  // hvm_start_info + memmap (PVH boots)
inline constexpr uint64_t kZeroPage = 0x7000;      // Linux boot_params (boot.rst "zero page")
inline constexpr uint64_t kBootStack = 0x8ff0;     // initial rsp
inline constexpr uint64_t kPml4 = 0x9000;          // identity page tables: PML4, PDPT, 4 PDs
inline constexpr uint64_t kPdpt = 0xa000;
inline constexpr uint64_t kPd = 0xb000;            // 4 pages: 0xb000..0xefff, 4 GiB of 2 MiB pages
inline constexpr uint64_t kCmdline = 0x20000;
inline constexpr uint64_t kCmdlineMax = 0x10000;  // our own cap; the kernel's cmdline_size may be lower
inline constexpr uint64_t kEbdaStart = 0x9fc00;   // MP table lives here (reserved in e820)
inline constexpr uint64_t kLowRamEnd = 0xa0000;
inline constexpr uint64_t kBiosStart = 0xe0000;   // ACPI tables (RSDP search area), reserved
inline constexpr uint64_t kHighMemStart = 0x100000;
inline constexpr uint64_t kKernelLoad = 0x1000000;  // 16 MiB, where relocatable kernels go

inline constexpr uint64_t kIoapicAddr = 0xfec00000;
inline constexpr uint64_t kLapicAddr = 0xfee00000;

}  // namespace vmm::layout
