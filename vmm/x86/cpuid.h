// The CPUID table a vCPU sees: KVM_GET_SUPPORTED_CPUID, filtered per vCPU (Intel SDM vol. 2A,
// CPUID): initial and x2APIC ids, logical processor count, the hypervisor bit, no PMU, and the
// KVM paravirtual leaves (0x40000000 "KVMKVMKVM", Documentation/virt/kvm/x86/cpuid.rst).
//
// Thread-safety: pure function.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

namespace vmm {

std::vector<kvm_cpuid_entry2> filter_cpuid(const std::vector<kvm_cpuid_entry2>& supported,
                                           uint32_t cpu_id, uint32_t cpu_count);

}  // namespace vmm
