// A vCPU's reset state (vcpu.h): everything KVM keeps for the vCPU, as it stood before the guest
// first ran, so that a reboot in place starts each vCPU exactly as the first boot did: the BSP at
// the kernel's entry, the APs waiting for INIT/SIPI. The order of the restore is QEMU's
// (kvm_arch_put_registers): regs, XSAVE, XCRs, sregs (which carry the APIC base), MSRs, MP
// state, LAPIC, events, debug registers.
//
// The MSRs are KVM's own list (KVM_GET_MSR_INDEX_LIST), read one by one, since KVM_GET_MSRS stops
// at the first MSR it does not implement for this vCPU. Without them the guest's paravirtual
// clock (MSR_KVM_SYSTEM_TIME_NEW) would survive the reset and KVM would go on writing the clock
// into memory the next kernel uses for something else.
#include <sys/ioctl.h>

#include <cerrno>

#include "devices/log.h"
#include "kvm/kvm_abi.h"
#include "kvm/vcpu.h"
#include "kvm/vcpu_reset_state.h"

namespace vmm {
namespace {

// What a guest points at its own memory: a reset must clear these or KVM keeps writing there.
bool must_restore(uint32_t msr) {
  switch (msr) {
    case 0x11:        // MSR_KVM_SYSTEM_TIME
    case 0x4b564d01:  // MSR_KVM_SYSTEM_TIME_NEW
    case 0x4b564d02:  // MSR_KVM_ASYNC_PF_EN
    case 0x4b564d03:  // MSR_KVM_STEAL_TIME
    case 0x4b564d04:  // MSR_KVM_PV_EOI_EN
      return true;
    default:
      return false;
  }
}

}  // namespace

img::Status Vcpu::save_reset_state(const std::vector<uint32_t>& msrs) {
  auto st = std::make_unique<ResetState>();
  auto get = [&](unsigned long req, void* arg, const char* name) -> img::Status {
    if (::ioctl(fd(), req, arg) < 0) {
      return img::io_error(errno, img::strfmt("%s on vCPU %u", name, id_));
    }
    return {};
  };
  RETURN_IF_ERROR(get(KVM_GET_REGS, &st->regs, "KVM_GET_REGS"));
  st->has_xsave = ::ioctl(fd(), kvm_abi::kGetXsave, &st->xsave) == 0;
  if (!st->has_xsave) RETURN_IF_ERROR(get(KVM_GET_FPU, &st->fpu, "KVM_GET_FPU"));
  st->has_xcrs = ::ioctl(fd(), KVM_GET_XCRS, &st->xcrs) == 0;
  RETURN_IF_ERROR(get(KVM_GET_SREGS, &st->sregs, "KVM_GET_SREGS"));
  for (uint32_t index : msrs) {
    std::vector<uint64_t> buf = kvm_abi::pack(std::vector<kvm_msr_entry>{{index, 0, 0}}, 1);
    if (::ioctl(fd(), kvm_abi::kGetMsrs, buf.data()) != 1) continue;  // not for this vCPU
    st->msrs.push_back(kvm_abi::unpack<kvm_msr_entry>(buf)[0]);
  }
  RETURN_IF_ERROR(get(KVM_GET_MP_STATE, &st->mp, "KVM_GET_MP_STATE"));
  RETURN_IF_ERROR(get(KVM_GET_LAPIC, &st->lapic, "KVM_GET_LAPIC"));
  RETURN_IF_ERROR(get(KVM_GET_VCPU_EVENTS, &st->events, "KVM_GET_VCPU_EVENTS"));
  // Written back with the NMI and SIPI fields valid, so a pending NMI does not outlive the reset.
  st->events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
  RETURN_IF_ERROR(get(KVM_GET_DEBUGREGS, &st->debugregs, "KVM_GET_DEBUGREGS"));
  reset_state_ = std::move(st);
  return {};
}

img::Status Vcpu::restore_reset_state() {
  if (!reset_state_) return img::invalid_argument(img::strfmt("vCPU %u: no reset state", id_));
  ResetState& st = *reset_state_;
  auto set = [&](unsigned long req, const void* arg, const char* name) -> img::Status {
    if (::ioctl(fd(), req, arg) < 0) {
      return img::io_error(errno, img::strfmt("%s on vCPU %u", name, id_));
    }
    return {};
  };
  RETURN_IF_ERROR(set(KVM_SET_REGS, &st.regs, "KVM_SET_REGS"));
  if (st.has_xsave) {
    RETURN_IF_ERROR(set(kvm_abi::kSetXsave, &st.xsave, "KVM_SET_XSAVE"));
  } else {
    RETURN_IF_ERROR(set(KVM_SET_FPU, &st.fpu, "KVM_SET_FPU"));
  }
  if (st.has_xcrs) RETURN_IF_ERROR(set(KVM_SET_XCRS, &st.xcrs, "KVM_SET_XCRS"));
  RETURN_IF_ERROR(set(KVM_SET_SREGS, &st.sregs, "KVM_SET_SREGS"));
  // KVM_SET_MSRS stops at the first MSR it refuses: skip that one and go on with the rest.
  for (size_t from = 0; from < st.msrs.size();) {
    std::vector<kvm_msr_entry> rest(st.msrs.begin() + from, st.msrs.end());
    std::vector<uint64_t> buf = kvm_abi::pack(rest, static_cast<uint32_t>(rest.size()));
    int n = ::ioctl(fd(), kvm_abi::kSetMsrs, buf.data());
    if (n < 0) return img::io_error(errno, img::strfmt("KVM_SET_MSRS on vCPU %u", id_));
    from += static_cast<size_t>(n);
    if (from >= st.msrs.size()) break;
    const kvm_msr_entry& refused = st.msrs[from];
    if (must_restore(refused.index)) {
      return img::not_supported(
          img::strfmt("vCPU %u: KVM refused to reset MSR 0x%x", id_, refused.index));
    }
    debug_log("vCPU %u: reset: KVM refused MSR 0x%x, skipped", id_, refused.index);
    ++from;
  }
  RETURN_IF_ERROR(set(KVM_SET_MP_STATE, &st.mp, "KVM_SET_MP_STATE"));
  RETURN_IF_ERROR(set(KVM_SET_LAPIC, &st.lapic, "KVM_SET_LAPIC"));
  RETURN_IF_ERROR(set(KVM_SET_VCPU_EVENTS, &st.events, "KVM_SET_VCPU_EVENTS"));
  RETURN_IF_ERROR(set(KVM_SET_DEBUGREGS, &st.debugregs, "KVM_SET_DEBUGREGS"));
  return {};
}

}  // namespace vmm
