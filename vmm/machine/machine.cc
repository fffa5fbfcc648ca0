#include "machine/machine.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>

#include "img/workers.h"

#include "devices/acpi_sleep.h"
#include "machine/check.h"
#include "machine/file_util.h"
#include "machine/guest_cmdline.h"
#include "security/privileges.h"
#include "security/seccomp.h"
#include "security/thread_spawner.h"
#include "virtio/console/console_device.h"
#include "x86/acpi.h"
#include "x86/boot_params.h"
#include "x86/cpu_setup.h"
#include "x86/cpuid.h"
#include "x86/e820.h"
#include "x86/kernel_loader.h"
#include "x86/layout.h"
#include "x86/mptable.h"
#include "x86/msrs.h"

namespace vmm {
namespace {

constexpr const char* kPowerOffWhy = "guest powered off (ACPI S5)";

// SIGINT and SIGTERM (and SIGWINCH, a terminal's new size for --console stdio) are read from a
// signalfd by the main loop, so every thread must have them blocked: done before the first
// thread starts. SIGPIPE is ignored: a control or console client
// that vanishes makes a write fail with EPIPE instead of killing the VM.
sigset_t terminate_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGWINCH);
  return set;
}

}  // namespace

img::Result<std::unique_ptr<Machine>> Machine::create(const MachineConfig& c) {
  RETURN_IF_ERROR(validate(c));
  sigset_t set = terminate_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  ASSIGN_OR_RETURN(Kvm kvm, Kvm::open());
  RETURN_IF_ERROR(kvm.check_required_caps());
  ASSIGN_OR_RETURN(Vm vm, Vm::create(kvm));
  ASSIGN_OR_RETURN(GuestRam ram, GuestRam::create(c.memory, c.hugepages, c.mem_prealloc));
  std::unique_ptr<Machine> m(new Machine(std::move(kvm), std::move(vm), std::move(ram)));
  m->cpus_ = c.cpus;
  m->memory_ = c.memory;
  m->config_ = c;
  m->on_reboot_ = c.on_reboot;
  m->add_commands();
  if (!c.control.empty()) {
    ASSIGN_OR_RETURN(m->control_, api::ControlServer::listen(c.control, m->dispatcher_));
  }
  for (const GuestMemory::Region& r : m->ram_.memory().regions()) {
    RETURN_IF_ERROR(m->vm_.add_memory(r.gpa, r.size, r.host));
  }
  ASSIGN_OR_RETURN(m->irq_, KvmInterruptController::create(m->vm_.fd()));
  m->ioevents_ = std::make_unique<KvmIoEventRegistry>(m->vm_.fd());
  RETURN_IF_ERROR(m->load_and_boot(c));
  RETURN_IF_ERROR(m->setup_devices(c));
  RETURN_IF_ERROR(m->setup_pci_devices(c));
  // Both would read stdin; the virtio console (the guest's hvc0) gets it.
  m->serial_input_ = !(c.console && c.console->kind == ConsoleSpec::Kind::kStdio);
  RETURN_IF_ERROR(m->setup_vcpus(c));
  // What a reset in place puts back: taken now, before the guest ran.
  ASSIGN_OR_RETURN(std::vector<uint32_t> msrs, m->kvm_.msr_index_list());
  for (auto& v : m->vcpus_) RETURN_IF_ERROR(v->save_reset_state(msrs));
  RETURN_IF_ERROR(m->vm_.save_chip_reset_state());
  ASSIGN_OR_RETURN(m->seccomp_, security::parse_seccomp_mode(c.seccomp));
  // Everything is open (/dev/kvm, taps, images, sockets) and no thread runs yet, so the whole
  // process changes credentials at once (glibc's setxid broadcast would meet filtered threads).
  if (!c.user.empty()) {
    ASSIGN_OR_RETURN(security::Credentials who, security::resolve_credentials(c.user, c.group));
    RETURN_IF_ERROR(security::drop_privileges(who));
  }
  // Compressed clusters are inflated on libimg's workers; started here, by this unfiltered
  // thread, since a device thread may not create threads (security/seccomp.h).
  if (m->seccomp_ != security::SeccompMode::kOff && (!c.disks.empty() || !c.scsi.empty())) {
    security::SeccompMode mode = m->seccomp_;
    RETURN_IF_ERROR(img::start_shared_workers([mode] {
      security::name_this_thread("img-worker");
      auto s = security::install_filter(security::ThreadKind::kDevice, mode);
      if (!s) std::fprintf(stderr, "vmm: image worker: %s\n", s.error().to_string().c_str());
      return s.has_value();
    }));
  }
  return m;
}

Machine::~Machine() {
  for (auto& v : vcpus_) v->kick();
  for (auto& v : vcpus_) v->join();
  if (console_) console_->stop();
}

img::Status Machine::load_and_boot(const MachineConfig& c) {
  const GuestMemory& mem = ram_.memory();
  uint64_t low_end = mem.regions()[0].size;
  const bool first = kernel_image_.empty();
  if (first) {
    ASSIGN_OR_RETURN(kernel_image_, read_whole_file(c.kernel, "kernel", low_end));
    if (!c.initrd.empty()) {
      ASSIGN_OR_RETURN(initrd_image_, read_whole_file(c.initrd, "initrd", low_end));
    }
  }
  const std::vector<uint8_t>& kernel = kernel_image_;
  auto loaded = load_kernel(kernel, mem, low_end);
  if (!loaded) return img::Unexpected(loaded.error().prepend("kernel " + c.kernel));
  LoadedKernel& k = *loaded;

  BootInfo info;
  if (first) {
    // A bzImage or a PVH vmlinux is Linux; a plain ELF64 is a freestanding guest with its own
    // flags. Composed once: a reset places the same line (and makes no host queries).
    GuestCmdline cmd = compose_guest_cmdline(c.cmdline, k.bzimage || k.pvh, host_is_kvm_pvm(),
                                             c.pvm_workarounds, vm_.tsc_khz());
    if (!cmd.added.empty()) {
      std::fprintf(stderr,
                   "vmm: kvm_pvm: adding '%s' to the kernel command line "
                   "(--no-pvm-workarounds turns this off)\n",
                   cmd.added.c_str());
    }
    guest_cmdline_ = cmd.cmdline;
  }
  info.cmdline = guest_cmdline_;
  info.e820 = build_e820(c.memory);
  if (!c.initrd.empty()) {
    const std::vector<uint8_t>& initrd = initrd_image_;
    // boot.rst: protocol 2.03+ gives initrd_addr_max; PVH kernels take any address below 4 GiB.
    uint64_t max = k.bzimage ? k.hdr.initrd_addr_max : 0xffffffff;
    ASSIGN_OR_RETURN(uint64_t at, place_initrd(initrd.size(), k.end, max, low_end));
    if (!mem.write(at, initrd.data(), initrd.size())) return img::invalid_argument("initrd placement");
    info.initrd_addr = at;
    info.initrd_size = initrd.size();
  }
  ASSIGN_OR_RETURN(std::vector<uint8_t> mp, build_mptable(c.cpus, layout::kEbdaStart));
  if (!mem.write(layout::kEbdaStart, mp.data(), mp.size())) return img::invalid_argument("MP table");
  ASSIGN_OR_RETURN(AcpiTables acpi, build_acpi_tables(c.cpus, layout::kBiosStart));
  if (!mem.write(layout::kBiosStart, acpi.bytes.data(), acpi.bytes.size())) {
    return img::invalid_argument("ACPI tables");
  }
  info.rsdp_addr = acpi.rsdp;
  ASSIGN_OR_RETURN(uint64_t boot_arg, write_boot_info(mem, k, info));
  RETURN_IF_ERROR(write_boot_tables(mem, k.mode));
  boot_mode_ = k.mode;
  boot_entry_ = k.entry;
  boot_arg_ = boot_arg;
  return {};
}

img::Status Machine::setup_devices(const MachineConfig& c) {
  ASSIGN_OR_RETURN(console_, SerialConsole::open(c.serial));
  SerialConsole* con = console_.get();
  KvmInterruptController* irq = irq_.get();
  serial_ = std::make_shared<Serial>([con](uint8_t b) { con->write(b); },
                                     [irq](bool level) { irq->set_irq_line(Serial::kCom1Irq, level); });
  RETURN_IF_ERROR(pio_.insert(Serial::kCom1Base, 8, serial_));
  auto i8042 =
      std::make_shared<I8042>([this] { guest_end(kExitGuestReset, "guest reset (i8042)", false); },
                              [irq](bool level) { irq->set_irq_line(I8042::kIrq, level); });
  RETURN_IF_ERROR(pio_.insert(I8042::kBase, I8042::kLen, i8042));
  i8042_ = i8042;
  auto sleep =
      std::make_shared<AcpiSleep>([this] { guest_end(kExitGuestPowerOff, kPowerOffWhy, true); });
  RETURN_IF_ERROR(pio_.insert(AcpiSleep::kBase, AcpiSleep::kLen, sleep));
  devices_.push_back(sleep);
  auto rtc = std::make_shared<Rtc>();
  RETURN_IF_ERROR(pio_.insert(Rtc::kBase, 2, rtc));
  devices_.push_back(i8042);
  devices_.push_back(rtc);
  auto sink = std::make_shared<PortSink>();
  struct {
    uint64_t base, len;
  } quiet[] = {
      {0x80, 1},   // POST codes
      {0x87, 1},   // DMA page register
      {0xed, 1},   // io_delay
      {0x2e8, 8},  // COM4
      {0x2f8, 8},  // COM2
      {0x3c0, 0x20},  // VGA
      {0x3e8, 8},  // COM3
  };
  for (auto& q : quiet) RETURN_IF_ERROR(pio_.insert(q.base, q.len, sink));
  if (!vm_.has_pit()) RETURN_IF_ERROR(pio_.insert(0x40, 4, sink));
  devices_.push_back(sink);
  device_names_ = {"com1", "i8042", "rtc", "acpi-sleep", "pci-host"};
  return {};
}

img::Status Machine::setup_vcpus(const MachineConfig& c) {
  ASSIGN_OR_RETURN(std::vector<kvm_cpuid_entry2> supported, kvm_.supported_cpuid());
  for (uint32_t id = 0; id < c.cpus; ++id) {
    ASSIGN_OR_RETURN(std::unique_ptr<Vcpu> v, Vcpu::create(kvm_, vm_, id));
    RETURN_IF_ERROR(v->set_cpuid(filter_cpuid(supported, id, c.cpus)));
    RETURN_IF_ERROR(v->set_msrs(boot_msrs()));
    RETURN_IF_ERROR(v->setup_lapic_lints());
    if (id == 0) {
      // Only the BSP gets boot state; the APs wait in wait-for-SIPI (in-kernel LAPIC) until the
      // guest starts them with INIT/SIPI.
      kvm_fpu fpu{};
      fpu.fcw = 0x37f;     // x87 default control word (what FNINIT sets)
      fpu.mxcsr = 0x1f80;  // all SSE exceptions masked
      RETURN_IF_ERROR(v->set_fpu(fpu));
      ASSIGN_OR_RETURN(kvm_sregs sregs, v->get_sregs());
      apply_boot_sregs(boot_mode_, &sregs);
      RETURN_IF_ERROR(v->set_sregs(sregs));
      RETURN_IF_ERROR(v->set_regs(boot_regs(boot_mode_, boot_entry_, boot_arg_)));
    }
    vcpus_.push_back(std::move(v));
  }
  return {};
}

void Machine::request_exit(int code, const std::string& why) {
  {
    std::lock_guard lock(mu_);
    if (exit_code_) return;
    exit_code_ = code;
    exit_why_ = why;
  }
  uint64_t one = 1;
  if (event_fd_.get() >= 0) (void)!::write(event_fd_.get(), &one, sizeof one);
}

std::string Machine::shutdown_note() {
  std::lock_guard lock(mu_);
  return request_ == Request::kReboot     ? " after a reboot request"
         : request_ == Request::kShutdown ? " after a shutdown request"
                                          : "";
}

bool Machine::guest_end(int code, const std::string& why, bool power_off) {
  Request req;
  {
    std::lock_guard lock(mu_);
    req = request_;
  }
  // Asked to reboot, any clean end boots again (a guest may power off on Ctrl-Alt-Del); asked
  // to shut down, the guest's reset ends the VM (Linux resets on Ctrl-Alt-Del by default).
  bool restart = req == Request::kReboot ||
                 (!power_off && on_reboot_ == OnReboot::kRestart && req != Request::kShutdown);
  if (!restart) {
    request_exit(code, why + shutdown_note());
    return false;
  }
  request_reset(why + shutdown_note());
  return true;
}

bool Machine::exiting() {
  std::lock_guard lock(mu_);
  return exit_code_.has_value();
}

img::Status Machine::serve_events() {
  ASSIGN_OR_RETURN(loop_, api::EventLoop::create());
  event_fd_ = Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (event_fd_.get() < 0) return img::io_error(errno, "eventfd");
  RETURN_IF_ERROR(loop_->add(event_fd_.get(), EPOLLIN, [this](uint32_t) {
    uint64_t n;
    (void)!::read(event_fd_.get(), &n, sizeof n);
  }));
  sigset_t set = terminate_signals();
  signal_fd_ = Fd(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
  if (signal_fd_.get() < 0) return img::io_error(errno, "signalfd");
  RETURN_IF_ERROR(loop_->add(signal_fd_.get(), EPOLLIN, [this](uint32_t) {
    signalfd_siginfo si;
    if (::read(signal_fd_.get(), &si, sizeof si) != sizeof si) return;
    if (si.ssi_signo == SIGWINCH) {
      if (virtio_console_) virtio_console_->host_resized();
      return;
    }
    request_exit(kExitInterrupted, img::strfmt("stopped by signal %u", si.ssi_signo));
  }));
  if (control_) RETURN_IF_ERROR(control_->attach(*loop_));
  return {};
}

bool Machine::on_vcpu_stop(const VcpuStop& s) {
  using R = VcpuStop::Reason;
  switch (s.reason) {
    case R::kStopped:
      return false;
    case R::kShutdown:  // a triple fault resets a PC
      return guest_end(kExitTripleFault, s.detail, false);
    case R::kSystemReset:
      return guest_end(kExitGuestReset, s.detail, false);
    case R::kInternalError:
      request_exit(kExitInternalError, s.detail);
      return false;
    case R::kHalted:  // no in-kernel LAPIC: nothing would wake it
      request_exit(kExitGuestReset, s.detail);
      return false;
    case R::kCrash:
      request_exit(kExitGuestCrash, s.detail);
      return false;
  }
  return false;
}

int Machine::run() {
  if (auto s = serve_events(); !s) {
    std::fprintf(stderr, "vmm: main loop: %s\n", s.error().to_string().c_str());
    return kExitVmmError;
  }
  security::set_process_mode(seccomp_);  // before the first thread (serial input) starts
  if (auto s = serial_input_ ? console_->start_input(serial_.get()) : img::Status{}; !s) {
    std::fprintf(stderr, "vmm: serial input: %s\n", s.error().to_string().c_str());
  }
  started_ = std::chrono::steady_clock::now();
  // Threads read the mode as they start and install their filter (security/seccomp.h): the
  // serial input thread above, the spawner (which creates device threads), the vCPUs; then this
  // thread, the last one set up.
  if (auto s = security::ThreadSpawner::start(); !s) {
    std::fprintf(stderr, "vmm: %s\n", s.error().to_string().c_str());
    return kExitVmmError;
  }
  for (auto& v : vcpus_) {
    v->start(&pio_, &mmio_, [this](const VcpuStop& s) { return on_vcpu_stop(s); });
  }
  if (auto s = security::install_filter(security::ThreadKind::kMain, seccomp_); !s) {
    request_exit(kExitVmmError, s.error().to_string());
  }
  while (!exiting()) {
    if (auto s = loop_->run_once(-1); !s) {
      request_exit(kExitVmmError, "main loop: " + s.error().to_string());
    }
    if (!exiting() && take_reset(nullptr)) reset_machine();
  }
  control_.reset();  // no client sees a half-torn-down machine
  for (auto& v : vcpus_) v->kick();
  for (auto& v : vcpus_) v->join();
  security::ThreadSpawner::stop();
  console_->stop();
  int code = *exit_code_;
  // A reset is the common end (the guest's `reboot`) and stays quiet; a power-off says so,
  // since it shares exit code 0.
  if (code != kExitGuestReset || exit_why_.starts_with(kPowerOffWhy) || shutdown_requested_) {
    std::fprintf(stderr, "vmm: %s\n", exit_why_.c_str());
  }
  return code;
}

}  // namespace vmm
