// Loading a guest kernel into guest memory. Two formats:
// - bzImage (Documentation/arch/x86/boot.rst): the setup header is parsed and checked, the
//   protected-mode kernel copied to its load address, entered at the 64-bit entry
//   (load address + 0x200). Protocol 2.12+ (XLF_KERNEL_64) is required.
// - ELF64 (System V gABI, x86-64 psABI): PT_LOAD segments copied to p_paddr; with a Xen PVH
//   note (XEN_ELFNOTE_PHYS32_ENTRY, type 18) the kernel is entered there in 32-bit protected mode
//   (Linux vmlinux), otherwise at e_entry in long mode (the freestanding test guest).
// Every field read from the file is hostile input: offsets, sizes and addresses are
// bounds-checked with overflow-safe arithmetic, and each error names the field.
//
// Thread-safety: pure functions over caller-owned memory.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "img/status.h"
#include "kvm/guest_memory.h"
#include "x86/cpu_setup.h"

namespace vmm {

// Fields of the real-mode kernel header (boot.rst "The Real-Mode Kernel Header"), by offset.
struct SetupHeader {
  static constexpr size_t kOffset = 0x1f1;  // setup_sects; the header starts here
  static constexpr uint16_t kMinVersion = 0x020c;
  static constexpr uint8_t kLoadedHigh = 0x01;   // loadflags
  static constexpr uint16_t kXlfKernel64 = 0x01;  // xloadflags

  uint8_t setup_sects = 0;       // 0x1f1 (0 means 4)
  uint16_t version = 0;          // 0x206
  uint8_t loadflags = 0;         // 0x211
  uint32_t initrd_addr_max = 0;  // 0x22c
  uint32_t kernel_alignment = 0;  // 0x230
  uint8_t relocatable = 0;       // 0x234
  uint16_t xloadflags = 0;       // 0x236
  uint32_t cmdline_size = 0;     // 0x238
  uint64_t pref_address = 0;     // 0x258
  uint32_t init_size = 0;        // 0x260
  size_t header_end = 0;         // 0x202 + byte at 0x201
  size_t setup_size = 0;         // (setup_sects + 1) * 512: the protected-mode kernel follows
};

img::Result<SetupHeader> parse_setup_header(std::span<const uint8_t> file);

struct LoadedKernel {
  EntryMode mode = EntryMode::kLong64;
  uint64_t entry = 0;
  uint64_t load_addr = 0;
  uint64_t end = 0;  // first byte above everything the kernel may use (init_size or segments)
  bool bzimage = false;
  bool pvh = false;
  SetupHeader hdr;                        // bzImage only
  std::vector<uint8_t> setup_header_raw;  // bytes [0x1f1, header_end) of the file (bzImage)
  uint32_t cmdline_max = 0;               // longest cmdline the kernel accepts, without NUL
};

// ram_low_end: end of RAM below the PCI hole (kernels and initrds live below it).
img::Result<LoadedKernel> load_bzimage(std::span<const uint8_t> file, const GuestMemory& mem,
                                       uint64_t ram_low_end);
img::Result<LoadedKernel> load_elf(std::span<const uint8_t> file, const GuestMemory& mem);
// ELF by magic, else bzImage.
img::Result<LoadedKernel> load_kernel(std::span<const uint8_t> file, const GuestMemory& mem,
                                      uint64_t ram_low_end);

// Highest 4 KiB-aligned address for an initrd of `size` bytes below min(initrd_addr_max + 1,
// ram_low_end) and above kernel_end (boot.rst: "as high as possible").
img::Result<uint64_t> place_initrd(uint64_t size, uint64_t kernel_end, uint64_t initrd_addr_max,
                                   uint64_t ram_low_end);

}  // namespace vmm
