// Vcpu::ResetState (vcpu.h): what save_reset_state() records, complete for the files that own
// the unique_ptr holding it (vcpu.cc) and fill it (vcpu_reset.cc).
#pragma once

#include <linux/kvm.h>

#include <vector>

#include "kvm/kvm_abi.h"
#include "kvm/vcpu.h"

namespace vmm {

struct Vcpu::ResetState {
  kvm_regs regs{};
  bool has_xsave = false;
  kvm_abi::Xsave xsave{};
  kvm_fpu fpu{};
  bool has_xcrs = false;
  kvm_xcrs xcrs{};
  kvm_sregs sregs{};
  std::vector<kvm_msr_entry> msrs;
  kvm_mp_state mp{};
  kvm_lapic_state lapic{};
  kvm_vcpu_events events{};
  kvm_debugregs debugregs{};
};

}  // namespace vmm
