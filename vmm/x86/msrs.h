// The MSR values a vCPU starts with (what firmware leaves for Linux): SYSENTER/SYSCALL MSRs
// cleared, fast strings on in IA32_MISC_ENABLE, MTRRs on with write-back default type.
// IA32_XSS is not written (some KVMs refuse it).
//
// Thread-safety: pure function.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

namespace vmm {

inline constexpr uint32_t kMsrSysenterCs = 0x174;
inline constexpr uint32_t kMsrSysenterEsp = 0x175;
inline constexpr uint32_t kMsrSysenterEip = 0x176;
inline constexpr uint32_t kMsrStar = 0xc0000081;
inline constexpr uint32_t kMsrLstar = 0xc0000082;
inline constexpr uint32_t kMsrCstar = 0xc0000083;
inline constexpr uint32_t kMsrSyscallMask = 0xc0000084;
inline constexpr uint32_t kMsrKernelGsBase = 0xc0000102;
inline constexpr uint32_t kMsrMiscEnable = 0x1a0;
inline constexpr uint32_t kMsrMtrrDefType = 0x2ff;

std::vector<kvm_msr_entry> boot_msrs();

}  // namespace vmm
