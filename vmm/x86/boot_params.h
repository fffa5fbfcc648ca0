// The structures a kernel reads at entry:
// - Linux boot_params, the "zero page" (Documentation/arch/x86/zero-page.rst and boot.rst): the
//   kernel's setup header copied from the file, then type_of_loader, cmd_line_ptr,
//   ramdisk_image/size, acpi_rsdp_addr and the e820 table filled in by the VMM.
// - PVH hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h, version 1) with its
//   memory map and one module (the initrd).
// Both are encoded field by field at their documented offsets, never by laying structs on bytes.
//
// Thread-safety: pure functions over caller-owned memory.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "img/status.h"
#include "kvm/guest_memory.h"
#include "x86/e820.h"
#include "x86/kernel_loader.h"

namespace vmm {

struct BootInfo {
  std::string cmdline;
  uint64_t initrd_addr = 0;
  uint64_t initrd_size = 0;
  uint64_t rsdp_addr = 0;  // 0: none
  std::vector<E820Entry> e820;
};

// zero-page.rst offsets.
namespace zp {
inline constexpr size_t kSize = 4096;
inline constexpr size_t kAcpiRsdpAddr = 0x070;
inline constexpr size_t kExtRamdiskImage = 0x0c0;
inline constexpr size_t kExtRamdiskSize = 0x0c4;
inline constexpr size_t kExtCmdLinePtr = 0x0c8;
inline constexpr size_t kE820Entries = 0x1e8;
inline constexpr size_t kTypeOfLoader = 0x210;
inline constexpr size_t kRamdiskImage = 0x218;
inline constexpr size_t kRamdiskSize = 0x21c;
inline constexpr size_t kCmdLinePtr = 0x228;
inline constexpr size_t kE820Table = 0x2d0;
inline constexpr size_t kE820Max = 128;  // E820_MAX_ENTRIES_ZEROPAGE
}  // namespace zp

// Checks the cmdline against the kernel's limit ("command line too long: N bytes, the kernel
// accepts at most M").
img::Status check_cmdline(const std::string& cmdline, uint32_t max_len);

// The 4 KiB zero page for a kernel entered with rsi = boot_params.
img::Result<std::array<uint8_t, zp::kSize>> build_zero_page(const LoadedKernel& k,
                                                            const BootInfo& info,
                                                            uint64_t cmdline_addr);

// hvm_start_info at `at`, memmap and module list right behind it; returns the bytes.
std::vector<uint8_t> build_pvh_start_info(const BootInfo& info, uint64_t at, uint64_t cmdline_addr);

// Writes the cmdline at layout::kCmdline and the zero page or PVH start info; returns the
// boot argument (rsi or ebx).
img::Result<uint64_t> write_boot_info(const GuestMemory& mem, const LoadedKernel& k,
                                      const BootInfo& info);

}  // namespace vmm
