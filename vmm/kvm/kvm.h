// Kvm: the /dev/kvm system handle (API version, capabilities, supported CPUID, vCPU mmap size).
// Vm: one VM file descriptor with its in-kernel irqchip, PIT and memory slots.
//
// Thread-safety: set up from one thread before the vCPUs run; afterwards the ioctls used by
// devices (irq lines, irqfds, routing) are serialized by their callers (see kvm_irq.h).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "img/status.h"

namespace vmm {

// Owns a file descriptor; closes it on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept;
  ~Fd();
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_ = -1;
};

// A capability the VMM needs, with its name for error messages and `vmm check`.
struct KvmCap {
  int cap;
  const char* name;
};
// IRQCHIP, IRQFD, IOEVENTFD, IRQ_ROUTING, USER_MEMORY, SET_TSS_ADDR, EXT_CPUID, MP_STATE,
// IMMEDIATE_EXIT: without any of these `vmm run` refuses to start.
const std::vector<KvmCap>& required_caps();

class Kvm {
 public:
  static constexpr int kApiVersion = 12;  // KVM_API_VERSION, stable since Linux 2.6.22
  // Opens the device and checks the API version; errors say what to do.
  static img::Result<Kvm> open(const std::string& path = "/dev/kvm");

  int fd() const { return fd_.get(); }
  int api_version() const;
  // KVM_CHECK_EXTENSION: > 0 when present (some caps return a count).
  int check_extension(int cap) const;
  // Fails naming the first missing required capability.
  img::Status check_required_caps() const;
  img::Result<std::vector<kvm_cpuid_entry2>> supported_cpuid() const;
  img::Result<size_t> vcpu_mmap_size() const;
  // KVM_GET_MSR_INDEX_LIST: the MSRs KVM saves and restores for a vCPU (what a reset puts back).
  img::Result<std::vector<uint32_t>> msr_index_list() const;

 private:
  explicit Kvm(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
};

class Vm {
 public:
  // KVM_CREATE_VM, then the in-kernel irqchip (PIC + IOAPIC + LAPICs) and the PIT; the irqchip
  // must exist before the first vCPU. TSS and identity map sit just below the BIOS area at the
  // top of 4 GiB (Intel VMX needs them; harmless elsewhere).
  static img::Result<Vm> create(const Kvm& kvm);

  int fd() const { return fd_.get(); }
  bool has_pit() const { return has_pit_; }
  // The guest's TSC frequency (KVM_GET_TSC_KHZ on the VM, Linux 6.0+), 0 if KVM cannot say.
  uint32_t tsc_khz() const;
  // KVM_SET_USER_MEMORY_REGION; slots are numbered from 0 in call order.
  img::Status add_memory(uint64_t gpa, uint64_t size, void* host);
  // The in-kernel PIC pair, IOAPIC and PIT as they are now (before the guest ran), and back to
  // that state for a machine reset. REQUIRES for the restore: every vCPU parked.
  img::Status save_chip_reset_state();
  img::Status restore_chip_reset_state();

  static constexpr uint64_t kTssAddr = 0xfffbd000;       // 3 pages
  static constexpr uint64_t kIdentityMapAddr = 0xfffbc000;  // 1 page

 private:
  explicit Vm(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
  uint32_t next_slot_ = 0;
  bool has_pit_ = false;
  std::vector<kvm_irqchip> chips_;  // PIC master, PIC slave, IOAPIC
  kvm_pit_state2 pit_{};
};

}  // namespace vmm
