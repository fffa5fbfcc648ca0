// Reset in place (machine.h): what a PC's reset line does, for a reboot that keeps the VMM
// process, its control socket, console sockets, taps and open images. The order:
//
//   1. every vCPU parked outside KVM_RUN (the one whose exit asked for the reset parked itself);
//      requests made until then belong to this reset;
//   2. the virtio devices quiesced (no new chains, in-flight I/O drained, disks flushed), then
//      every device back to its power-on state: the PCI functions (config space, BARs unmapped,
//      MSI-X table masked and its routes gone, the virtio device reset as by a status write of
//      0), COM1, the i8042; the RTC keeps its clock and CMOS RAM, as a PC's battery does;
//   3. the in-kernel PICs, IOAPIC and PIT back to the state saved before the first boot;
//   4. guest RAM zeroed (given back to the host), the kernel, initrd and boot tables placed
//      again from the copies read at start-up;
//   5. each vCPU's saved reset state put back (the BSP at the kernel's entry, the APs waiting for
//      INIT/SIPI), and the vCPUs let go, unless the VM was paused (it stays paused, reset).
//
// A failure on the way leaves a machine that cannot run: the VM ends (exit 1) naming the step.
#include <sys/timerfd.h>
#include <unistd.h>

#include <cstdio>

#include "machine/machine.h"
#include "virtio/virtio_pci.h"
#include "x86/cpu_setup.h"

namespace vmm {

void Machine::request_reset(const std::string& why) {
  {
    std::lock_guard lock(mu_);
    if (exit_code_) return;
    if (!reset_pending_) reset_why_ = why;
    reset_pending_ = true;
  }
  uint64_t one = 1;
  if (event_fd_.get() >= 0) (void)!::write(event_fd_.get(), &one, sizeof one);
}

bool Machine::take_reset(std::string* why) {
  std::lock_guard lock(mu_);
  if (!reset_pending_) return false;
  if (why) {
    *why = reset_why_;
    reset_pending_ = false;
    reset_why_.clear();
    request_ = Request::kNone;  // the guest acted on it (or the reset overrides it)
  }
  return true;
}

void Machine::reset_machine() {
  for (auto& v : vcpus_) v->pause();
  std::string why;
  if (!take_reset(&why)) {  // cannot happen (only this thread takes it); never leave them parked
    if (state_ == RunState::kRunning) {
      for (auto& v : vcpus_) v->resume();
    }
    return;
  }
  std::fprintf(stderr, "vmm: %s: resetting the machine (reboot %u)\n", why.c_str(), reboots_ + 1);
  if (auto s = reset_devices_and_cpus(); !s) {
    request_exit(kExitVmmError, "reset: " + s.error().to_string());
    return;
  }
  ++reboots_;
  shutdown_requested_ = false;
  if (shutdown_timer_.get() >= 0) {
    itimerspec off{};
    ::timerfd_settime(shutdown_timer_.get(), 0, &off, nullptr);
  }
  if (state_ == RunState::kRunning) {
    for (auto& v : vcpus_) v->resume();
  }
}

img::Status Machine::reset_devices_and_cpus() {
  // Quiesced first, so that what the guest wrote reaches the images before the queues go; a
  // paused VM's devices are quiet already. Resumed, then reset from a running state.
  if (state_ == RunState::kRunning) {
    for (auto& d : virtio_) {
      if (auto s = d->pause(); !s) {
        std::fprintf(stderr, "vmm: reset: %s\n", s.error().to_string().c_str());
      }
    }
  }
  for (auto& d : virtio_) d->resume();
  serial_->reset();
  for (auto& d : devices_) d->reset();
  RETURN_IF_ERROR(vm_.restore_chip_reset_state());
  RETURN_IF_ERROR(ram_.clear());
  RETURN_IF_ERROR(load_and_boot(config_));
  for (auto& v : vcpus_) RETURN_IF_ERROR(v->restore_reset_state());
  // The saved BSP state holds the first boot's entry; the kernel is the same bytes, so is it.
  return vcpus_.front()->set_regs(boot_regs(boot_mode_, boot_entry_, boot_arg_));
}

}  // namespace vmm
