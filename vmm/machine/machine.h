// Machine: one PC-like VM assembled from the parts: guest RAM around the 32-bit PCI hole, the
// kernel and initrd loaded with their boot structures (zero page or PVH start info, e820, ACPI,
// MP table), COM1, i8042, RTC, the PCI bus with the virtio devices (blk, rng, console), and the
// vCPU threads. run() blocks until the VM ends and returns the process exit code.
//
// A guest reset (i8042 pulse, triple fault, reset event) ends the VM or, with --on-reboot restart
// or after a control-socket reboot, resets it in place (machine_reset.cc): vCPUs parked, devices
// back to power-on, RAM zeroed, the kernel loaded again from the copy kept since start-up, each
// vCPU's saved reset state put back, and the vCPUs let go, all in the same process.
//
// run() is the main thread's event loop (api/event_loop.h): it serves the control socket
// (--control, machine_control.cc), SIGINT/SIGTERM (through a signalfd: a clean stop, exit 130)
// and the machine's own events (a vCPU or device ending the VM, a shutdown timeout). Pausing parks
// every vCPU outside KVM_RUN, then quiesces the virtio devices (no new chains, in-flight disk I/O
// drained, disks flushed) before it returns; resume undoes it in reverse order.
//
// Thread-safety: create() and run() from one thread; devices and vCPUs run on their own threads
// until run() returns. request_exit() is safe from any thread; the control commands run on the
// run() thread.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "api/control_protocol.h"
#include "api/control_server.h"
#include "api/event_loop.h"
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
#include "security/seccomp.h"
#include "x86/cpu_setup.h"

namespace vmm {

namespace virtio {
class VirtioPciDevice;
namespace blk {
class BlkDevice;
}
namespace balloon {
class BalloonDevice;
}
namespace console {
class ConsoleDevice;
}
namespace net {
class NetDevice;
}
}  // namespace virtio

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
  // Reads the kernel and initrd (kept for a reset) on the first call, then places them and the
  // boot tables in guest RAM.
  img::Status load_and_boot(const MachineConfig& c);
  img::Status setup_vcpus(const MachineConfig& c);
  // True: the vCPU stays parked for a reset in place.
  bool on_vcpu_stop(const VcpuStop& s);
  // A clean end asked for by the guest (reset or power-off): a reset in place when the policy or
  // a pending reboot request says so (returns true), else the end of the VM with code.
  bool guest_end(int code, const std::string& why, bool power_off);
  // machine_reset.cc. request_reset() is safe from any thread; the reset runs on run()'s thread.
  void request_reset(const std::string& why);
  bool take_reset(std::string* why);  // true if one is pending (why: its reason, cleared)
  void reset_machine();
  img::Status reset_devices_and_cpus();
  // machine_control.cc: the control socket's commands.
  void add_commands();
  api::CommandResult info() const;
  api::CommandResult disk_stats() const;
  api::CommandResult nic_stats() const;
  api::CommandResult pause();
  api::CommandResult resume();
  api::CommandResult shutdown(const api::Json& args, bool reboot);
  api::CommandResult set_balloon(const api::Json& args);
  api::CommandResult query_balloon() const;
  api::CommandResult block_resize(const api::Json& args);
  api::CommandResult hard_reset();
  img::Status serve_events();  // registers the signalfd, the event fd and the control socket
  bool exiting();
  std::string shutdown_note();

  enum class RunState { kRunning, kPaused };
  struct Disk {
    std::string path;
    const virtio::blk::BlkDevice* blk;
    std::shared_ptr<virtio::VirtioPciDevice> pci;  // its transport, for block_resize
  };

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

  // What the control socket reports and acts on.
  uint32_t cpus_ = 1;
  uint64_t memory_ = 0;
  std::vector<Disk> disks_;
  struct Nic {
    std::string tap, bridge, mac;
    const virtio::net::NetDevice* dev;  // owned through virtio_
  };
  std::vector<Nic> nics_;
  std::shared_ptr<virtio::VirtioPciDevice> scsi_pci_;  // --scsi's controller, for block_resize
  std::vector<std::string> scsi_paths_;                // its LUNs' images
  std::vector<std::string> device_names_;
  std::vector<std::shared_ptr<virtio::VirtioPciDevice>> virtio_;
  virtio::balloon::BalloonDevice* balloon_ = nullptr;  // --balloon; owned through virtio_
  virtio::console::ConsoleDevice* virtio_console_ = nullptr;  // --console stdio; as balloon_
  std::shared_ptr<I8042> i8042_;
  std::chrono::steady_clock::time_point started_;
  RunState state_ = RunState::kRunning;  // run() thread only
  bool shutdown_requested_ = false;      // run() thread only
  double shutdown_timeout_s_ = 0;
  uint32_t reboots_ = 0;  // run() thread only: resets in place so far
  OnReboot on_reboot_ = OnReboot::kDestroy;
  MachineConfig config_;               // what load_and_boot places again on a reset
  std::vector<uint8_t> kernel_image_;  // the kernel and initrd files as read at start-up
  std::vector<uint8_t> initrd_image_;
  std::string guest_cmdline_;  // the kernel command line as composed on the first load
  // Guarded by mu_: the last shutdown or reboot request over the control socket (until the guest
  // acts on it), and a reset waiting for run()'s thread.
  enum class Request { kNone, kShutdown, kReboot };
  Request request_ = Request::kNone;
  bool reset_pending_ = false;
  std::string reset_why_;

  api::Dispatcher dispatcher_;
  std::unique_ptr<api::EventLoop> loop_;  // before control_, which unregisters from it
  std::unique_ptr<api::ControlServer> control_;
  Fd event_fd_;   // eventfd: request_exit() was called
  Fd signal_fd_;  // SIGINT, SIGTERM, SIGWINCH
  Fd shutdown_timer_;

  security::SeccompMode seccomp_ = security::SeccompMode::kOff;  // from --seccomp
  std::mutex mu_;
  std::optional<int> exit_code_;
  std::string exit_why_;
};

}  // namespace vmm
