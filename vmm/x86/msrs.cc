#include "x86/msrs.h"

namespace vmm {

std::vector<kvm_msr_entry> boot_msrs() {
  auto e = [](uint32_t index, uint64_t data) {
    kvm_msr_entry m{};
    m.index = index;
    m.data = data;
    return m;
  };
  return {
      e(kMsrSysenterCs, 0),   e(kMsrSysenterEsp, 0), e(kMsrSysenterEip, 0),
      e(kMsrStar, 0),         e(kMsrLstar, 0),       e(kMsrCstar, 0),
      e(kMsrSyscallMask, 0),  e(kMsrKernelGsBase, 0),
      e(kMsrMiscEnable, 1),  // bit 0: fast-string operations enabled
      e(kMsrMtrrDefType, (1u << 11) | 6),  // MTRRs enabled, default type write-back
  };
}

}  // namespace vmm
