// Vcpu: one KVM vCPU, its kvm_run page, and the KVM_RUN loop that dispatches port I/O and MMIO
// exits to the Buses. The loop runs on its own thread (start()); kick() stops it from any
// thread with immediate_exit plus a signal whose handler was installed without SA_RESTART, so
// a KVM_RUN blocked in a guest `hlt` returns EINTR.
//
// pause() parks the loop outside KVM_RUN the same way (immediate_exit plus the signal) and returns
// once the vCPU is parked; resume() lets it enter KVM_RUN again. Register state is untouched.
//
// A machine reset (reboot in place, machine/machine_reset.cc): save_reset_state() records the
// vCPU's whole architectural state before its first KVM_RUN, restore_reset_state() puts it back
// while the loop is parked (vcpu_reset.cc). When the loop meets an exit that ends the guest's run
// (a triple fault, a reset event) it parks itself before it asks on_stop, which may keep the
// thread for a reset (return true) or let it end.
//
// Thread-safety: setters are called before start() or while parked; kick(), pause() and resume()
// are thread-safe.
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "devices/bus.h"
#include "img/status.h"
#include "kvm/kvm.h"

namespace vmm {

// Why a vCPU loop ended.
struct VcpuStop {
  enum class Reason {
    kStopped,        // asked to stop (another vCPU or a device ended the VM)
    kShutdown,       // KVM_EXIT_SHUTDOWN: triple fault
    kInternalError,  // KVM_EXIT_INTERNAL_ERROR / FAIL_ENTRY / unexpected exit
    kHalted,         // KVM_EXIT_HLT (only without an in-kernel LAPIC)
    kSystemReset,    // KVM_EXIT_SYSTEM_EVENT reset or shutdown (PSCI-like paths)
    kCrash,          // KVM_EXIT_SYSTEM_EVENT crash
  };
  Reason reason = Reason::kStopped;
  std::string detail;
};

class Vcpu {
 public:
  static img::Result<std::unique_ptr<Vcpu>> create(const Kvm& kvm, const Vm& vm, uint32_t id);
  ~Vcpu();

  uint32_t id() const { return id_; }
  int fd() const { return fd_.get(); }

  img::Status set_cpuid(const std::vector<kvm_cpuid_entry2>& entries);
  // Fails unless KVM accepted every entry, naming the first refused MSR.
  img::Status set_msrs(const std::vector<kvm_msr_entry>& msrs);
  img::Status set_regs(const kvm_regs& regs);
  img::Result<kvm_regs> get_regs() const;
  img::Result<kvm_sregs> get_sregs() const;
  img::Status set_sregs(const kvm_sregs& sregs);
  img::Status set_fpu(const kvm_fpu& fpu);
  // LINT0 = ExtINT (the PIC reaches the BSP), LINT1 = NMI, as a BIOS leaves them.
  img::Status setup_lapic_lints();

  // Records regs, FPU (XSAVE where KVM has it), XCRs, sregs, every MSR of `msrs` that KVM reads,
  // the LAPIC, MP state, pending events and debug registers. REQUIRES: not started.
  img::Status save_reset_state(const std::vector<uint32_t>& msrs);
  // Puts the saved state back (an MSR KVM refuses is skipped and named in the debug log; a
  // paravirtual clock or fault MSR refused fails). REQUIRES: saved; parked or not started.
  img::Status restore_reset_state();

  // Installs the kick signal handler (process-wide, once).
  static void install_kick_handler();
  // Runs the loop on a new thread; on_stop is called on that thread when the loop stops. For
  // kStopped the thread then ends. For any other reason the vCPU is already parked (pause_ set)
  // when on_stop runs: true keeps the thread, parked until resume() (after a reset), false ends it.
  void start(Bus* pio, Bus* mmio, std::function<bool(const VcpuStop&)> on_stop);
  // Makes the loop end soon with kStopped. Safe to call many times, from any thread.
  void kick();
  void join();
  // Parks the loop and returns when it is parked (or has ended). REQUIRES: start() was called.
  void pause();
  void resume();

 private:
  Vcpu(uint32_t id, Fd fd, kvm_run* run, size_t run_size);
  VcpuStop run_loop(Bus* pio, Bus* mmio);
  // Marks the loop ended (pause() waiters wake), then tells on_stop (when given).
  void end_thread(const std::function<bool(const VcpuStop&)>& on_stop, const VcpuStop& s);
  void handle_io(Bus* pio);
  void handle_mmio(Bus* mmio);
  // Called by the loop when pause_ is set: waits until resume() or kick().
  void park();
  void interrupt();  // immediate_exit plus the kick signal

  struct ResetState;

  uint32_t id_;
  Fd fd_;
  kvm_run* run_;
  size_t run_size_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> started_{false};
  std::atomic<bool> pause_{false};
  std::mutex park_mu_;
  std::condition_variable park_cv_;
  bool parked_ = false;  // guarded by park_mu_
  bool ended_ = false;   // guarded by park_mu_
  std::thread thread_;
  std::unique_ptr<ResetState> reset_state_;
};

}  // namespace vmm
