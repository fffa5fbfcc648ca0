// Machine: one PC-like VM assembled from the parts: guest RAM around the 32-bit PCI hole, the
// kernel and initrd loaded with their boot structures (zero page or PVH start info, e820, ACPI,
// MP table), COM1, i8042, RTC, the PCI bus with the virtio devices (blk, rng, console), and the vCPU threads.
// run() blocks until the guest resets or fails and returns the process exit code.
//
// Thread-safety: create() and run() from one thread; devices and vCPUs run on their own threads
// until run() returns.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "devices/bus.h"
#include "devices/i8042.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "devices/serial_console.h"
#include "kvm/guest_ram.h"
#include "kvm/kvm.h"
#include "kvm/kvm_irq.h"
#include "kvm/vcpu.h"
#include "machine/config.h"
#include "x86/cpu_setup.h"

namespace vmm {

class Machine {
 public:
  static img::Result<std::unique_ptr<Machine>> create(const MachineConfig& config);
  ~Machine();

  // Runs until the guest ends; returns an ExitCode and prints why on stderr when non-zero.
  int run();
  // Ends the VM from any thread (first call wins).
  void request_exit(int code, const std::string& why);

 private:
  Machine(Kvm kvm, Vm vm, GuestRam ram)
      : kvm_(std::move(kvm)), vm_(std::move(vm)), ram_(std::move(ram)) {}
  img::Status setup_devices(const MachineConfig& c);
  img::Status setup_pci_devices(const MachineConfig& c);
  img::Status load_and_boot(const MachineConfig& c);
  img::Status setup_vcpus(const MachineConfig& c);
  void on_vcpu_stop(const VcpuStop& s);

  // Declaration order is teardown order reversed: vCPUs go first, guest memory and the VM last.
  Kvm kvm_;
  Vm vm_;
  GuestRam ram_;
  std::unique_ptr<KvmInterruptController> irq_;
  std::unique_ptr<KvmIoEventRegistry> ioevents_;
  // mmio_ outlives pio_: the PCI bus sits on pio_ and unmaps its BARs from mmio_ when it dies.
  Bus mmio_;
  Bus pio_;
  std::unique_ptr<SerialConsole> console_;
  std::shared_ptr<Serial> serial_;
  bool serial_input_ = true;  // off when --console stdio reads stdin instead
  std::vector<std::shared_ptr<BusDevice>> devices_;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
  EntryMode boot_mode_ = EntryMode::kLong64;
  uint64_t boot_entry_ = 0;
  uint64_t boot_arg_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<int> exit_code_;
  std::string exit_why_;
};

}  // namespace vmm
