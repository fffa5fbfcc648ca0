// The CPU state a boot protocol enters with, built by the VMM instead of firmware:
// - 64-bit (Linux boot protocol, "64-bit Boot Protocol" in boot.rst): long mode, identity-mapped
//   first 4 GiB with 2 MiB pages, flat __BOOT_CS/__BOOT_DS, rsi = boot_params.
// - PVH (Xen docs/misc/pvh.pandoc): 32-bit protected mode, paging off, flat 4 GiB segments,
//   ebx = hvm_start_info.
// The GDT and page tables are written into guest memory at the layout.h addresses.
//
// Thread-safety: pure functions over caller-owned state.
#pragma once

#include <linux/kvm.h>

#include <cstdint>

#include "img/status.h"
#include "kvm/guest_memory.h"

namespace vmm {

enum class EntryMode { kLong64, kProtected32 };

// GDT descriptor for (flags, base, limit) in the layout of Intel SDM vol. 3A, 3.4.5.
uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit);
// The kvm_segment a selector of that descriptor loads.
kvm_segment segment_from_gdt(uint64_t entry, uint16_t selector);

// Writes the GDT (null, code 0x08, data 0x10, TSS 0x18), the empty IDT, and for kLong64 the
// identity page tables. Fails if the layout addresses are outside guest memory.
img::Status write_boot_tables(const GuestMemory& mem, EntryMode mode);
// Sets segments, descriptor tables, CR0/CR3/CR4/EFER in sregs (read from the vCPU first).
void apply_boot_sregs(EntryMode mode, kvm_sregs* sregs);
// rip = entry, rsp = boot stack, and boot_arg in rsi (kLong64) or ebx (kProtected32).
kvm_regs boot_regs(EntryMode mode, uint64_t entry, uint64_t boot_arg);

}  // namespace vmm
