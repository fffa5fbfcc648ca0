#include "x86/cpuid.h"

namespace vmm {

std::vector<kvm_cpuid_entry2> filter_cpuid(const std::vector<kvm_cpuid_entry2>& supported,
                                           uint32_t cpu_id, uint32_t cpu_count) {
  std::vector<kvm_cpuid_entry2> out = supported;
  for (kvm_cpuid_entry2& e : out) {
    switch (e.function) {
      case 1:
        // EBX[31:24] initial APIC id, EBX[23:16] logical processors per package, EBX[15:8]
        // CLFLUSH line size in 8-byte units.
        e.ebx = (cpu_id << 24) | ((cpu_count & 0xff) << 16) | (8u << 8);
        if (cpu_count > 1) e.edx |= 1u << 28;  // HTT: the EBX count is valid
        e.ecx |= 1u << 31;                      // running under a hypervisor
        break;
      case 0xa:  // architectural PMU: none offered
        e.eax = e.ebx = e.ecx = e.edx = 0;
        break;
      case 0xb:
      case 0x1f:
        e.edx = cpu_id;  // x2APIC id
        break;
      default:
        break;
    }
  }
  return out;
}

}  // namespace vmm
