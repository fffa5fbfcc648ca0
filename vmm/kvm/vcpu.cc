#include "kvm/vcpu.h"

#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "devices/log.h"
#include "kvm/kvm_abi.h"
#include "kvm/vcpu_reset_state.h"
#include "security/seccomp.h"

namespace vmm {
namespace {

int kick_signal() { return SIGRTMIN + 1; }

void log_unhandled(const char* space, uint64_t addr) {
  static std::mutex mu;
  static std::vector<std::pair<const char*, uint64_t>> seen;
  if (!debug_enabled()) return;
  std::lock_guard lock(mu);
  for (auto& s : seen) {
    if (s.first == space && s.second == addr) return;
  }
  if (seen.size() < 256) seen.push_back({space, addr});
  debug_log("unhandled %s access at 0x%llx (logged once)", space, (unsigned long long)addr);
}

}  // namespace

img::Result<std::unique_ptr<Vcpu>> Vcpu::create(const Kvm& kvm, const Vm& vm, uint32_t id) {
  int fd = ::ioctl(vm.fd(), KVM_CREATE_VCPU, static_cast<unsigned long>(id));
  if (fd < 0) return img::io_error(errno, img::strfmt("KVM_CREATE_VCPU %u", id));
  Fd owned(fd);
  ASSIGN_OR_RETURN(size_t size, kvm.vcpu_mmap_size());
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return img::io_error(errno, "mmap of the kvm_run page");
  return std::unique_ptr<Vcpu>(new Vcpu(id, std::move(owned), static_cast<kvm_run*>(p), size));
}

Vcpu::Vcpu(uint32_t id, Fd fd, kvm_run* run, size_t run_size)
    : id_(id), fd_(std::move(fd)), run_(run), run_size_(run_size) {}

Vcpu::~Vcpu() {
  kick();
  join();
  ::munmap(run_, run_size_);
}

img::Status Vcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  std::vector<uint64_t> buf = kvm_abi::pack(entries, static_cast<uint32_t>(entries.size()));
  if (::ioctl(fd(), kvm_abi::kSetCpuid2, buf.data()) < 0) return img::io_error(errno, "KVM_SET_CPUID2");
  return {};
}

img::Status Vcpu::set_msrs(const std::vector<kvm_msr_entry>& msrs) {
  std::vector<uint64_t> buf = kvm_abi::pack(msrs, static_cast<uint32_t>(msrs.size()));
  int n = ::ioctl(fd(), kvm_abi::kSetMsrs, buf.data());
  if (n < 0) return img::io_error(errno, "KVM_SET_MSRS");
  if (static_cast<size_t>(n) != msrs.size()) {
    return img::not_supported(img::strfmt("KVM refused MSR 0x%x", msrs[n].index));
  }
  return {};
}

img::Status Vcpu::set_regs(const kvm_regs& regs) {
  if (::ioctl(fd(), KVM_SET_REGS, &regs) < 0) return img::io_error(errno, "KVM_SET_REGS");
  return {};
}

img::Result<kvm_regs> Vcpu::get_regs() const {
  kvm_regs r{};
  if (::ioctl(fd(), KVM_GET_REGS, &r) < 0) return img::io_error(errno, "KVM_GET_REGS");
  return r;
}

img::Result<kvm_sregs> Vcpu::get_sregs() const {
  kvm_sregs s{};
  if (::ioctl(fd(), KVM_GET_SREGS, &s) < 0) return img::io_error(errno, "KVM_GET_SREGS");
  return s;
}

img::Status Vcpu::set_sregs(const kvm_sregs& sregs) {
  if (::ioctl(fd(), KVM_SET_SREGS, &sregs) < 0) return img::io_error(errno, "KVM_SET_SREGS");
  return {};
}

img::Status Vcpu::set_fpu(const kvm_fpu& fpu) {
  if (::ioctl(fd(), KVM_SET_FPU, &fpu) < 0) return img::io_error(errno, "KVM_SET_FPU");
  return {};
}

img::Status Vcpu::setup_lapic_lints() {
  // Local APIC register offsets (Intel SDM vol. 3, 10.5.1): LVT LINT0 0x350, LINT1 0x360;
  // delivery mode in bits 8..10 (ExtINT 7, NMI 4).
  kvm_lapic_state lapic{};
  if (::ioctl(fd(), KVM_GET_LAPIC, &lapic) < 0) return img::io_error(errno, "KVM_GET_LAPIC");
  auto set_mode = [&](size_t off, uint32_t mode) {
    uint32_t v;
    std::memcpy(&v, lapic.regs + off, 4);
    v = (v & ~0x700u) | (mode << 8);
    std::memcpy(lapic.regs + off, &v, 4);
  };
  set_mode(0x350, 7);
  set_mode(0x360, 4);
  if (::ioctl(fd(), KVM_SET_LAPIC, &lapic) < 0) return img::io_error(errno, "KVM_SET_LAPIC");
  return {};
}

void Vcpu::install_kick_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa{};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
    sigaction(kick_signal(), &sa, nullptr);
  });
}

void Vcpu::start(Bus* pio, Bus* mmio, std::function<bool(const VcpuStop&)> on_stop) {
  install_kick_handler();
  started_ = true;
  thread_ = std::thread([this, pio, mmio, on_stop = std::move(on_stop)] {
    // The vCPU's own filter before its first KVM_RUN: from here on a guest drives this thread.
    if (auto f = security::enter_thread(security::ThreadKind::kVcpu, "vcpu " + std::to_string(id_));
        !f) {
      end_thread(on_stop, {VcpuStop::Reason::kInternalError,
                           img::strfmt("vCPU %u: %s", id_, f.error().to_string().c_str())});
      return;
    }
    for (;;) {
      VcpuStop s = run_loop(pio, mmio);
      if (s.reason == VcpuStop::Reason::kStopped) {
        end_thread(on_stop, s);
        return;
      }
      // Parked first: a reset that on_stop asks for resumes this vCPU only after it has been
      // reset, and a pause() meanwhile finds it parked.
      pause_ = true;
      if (!on_stop(s)) {
        end_thread(nullptr, s);
        return;
      }
    }
  });
}

void Vcpu::end_thread(const std::function<bool(const VcpuStop&)>& on_stop, const VcpuStop& s) {
  {
    std::lock_guard lock(park_mu_);
    ended_ = true;
  }
  park_cv_.notify_all();
  if (on_stop) on_stop(s);
}

void Vcpu::interrupt() {
  // immediate_exit covers the window between the flag check and the next KVM_RUN.
  __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST);
  if (started_ && thread_.joinable()) pthread_kill(thread_.native_handle(), kick_signal());
}

void Vcpu::kick() {
  stop_ = true;
  {
    std::lock_guard lock(park_mu_);  // a parked loop wakes and sees stop_
  }
  park_cv_.notify_all();
  interrupt();
}

void Vcpu::pause() {
  pause_ = true;
  interrupt();
  std::unique_lock lock(park_mu_);
  park_cv_.wait(lock, [this] { return parked_ || ended_; });
}

void Vcpu::resume() {
  {
    std::lock_guard lock(park_mu_);
    pause_ = false;
  }
  park_cv_.notify_all();
}

void Vcpu::park() {
  std::unique_lock lock(park_mu_);
  parked_ = true;
  park_cv_.notify_all();
  park_cv_.wait(lock, [this] { return !pause_.load() || stop_.load(); });
  parked_ = false;
}

void Vcpu::join() {
  if (thread_.joinable()) thread_.join();
}

void Vcpu::handle_io(Bus* pio) {
  auto& io = run_->io;
  uint8_t* data = reinterpret_cast<uint8_t*>(run_) + io.data_offset;
  for (uint32_t i = 0; i < io.count; ++i, data += io.size) {
    if (io.direction == KVM_EXIT_IO_OUT) {
      if (!pio->write(io.port, std::span<const uint8_t>(data, io.size))) {
        log_unhandled("port write", io.port);
      }
    } else if (!pio->read(io.port, std::span<uint8_t>(data, io.size))) {
      std::memset(data, 0xff, io.size);
      log_unhandled("port read", io.port);
    }
  }
}

void Vcpu::handle_mmio(Bus* mmio) {
  auto& m = run_->mmio;
  uint32_t len = m.len > 8 ? 8 : m.len;
  if (m.is_write) {
    if (!mmio->write(m.phys_addr, std::span<const uint8_t>(m.data, len))) {
      log_unhandled("MMIO write", m.phys_addr);
    }
  } else if (!mmio->read(m.phys_addr, std::span<uint8_t>(m.data, len))) {
    std::memset(m.data, 0xff, len);
    log_unhandled("MMIO read", m.phys_addr);
  }
}

VcpuStop Vcpu::run_loop(Bus* pio, Bus* mmio) {
  using R = VcpuStop::Reason;
  bool completion_due = false;  // the last exit was I/O that KVM finishes on the next KVM_RUN
  while (!stop_.load()) {
    if (pause_.load()) {
      // Parked with the instruction half done, KVM would finish it at the next KVM_RUN on
      // whatever state is there by then: after a reset, the new boot's registers (an `in`
      // writing AL and skipping an instruction at the kernel's entry). KVM_RUN with
      // immediate_exit finishes it and runs nothing more (api.rst, KVM_EXIT_IO).
      if (completion_due) {
        __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST);
        (void)::ioctl(fd(), KVM_RUN, 0);
        __atomic_store_n(&run_->immediate_exit, 0, __ATOMIC_SEQ_CST);
        completion_due = false;
      }
      park();
      continue;
    }
    completion_due = false;
    if (::ioctl(fd(), KVM_RUN, 0) < 0) {
      int e = errno;
      if (e == EINTR || e == EAGAIN) {
        __atomic_store_n(&run_->immediate_exit, 0, __ATOMIC_SEQ_CST);
        continue;  // the loop head looks at stop_ and pause_
      }
      return {R::kInternalError, img::strfmt("KVM_RUN on vCPU %u: %s", id_, std::strerror(e))};
    }
    switch (run_->exit_reason) {
      case KVM_EXIT_IO:
        handle_io(pio);
        completion_due = true;
        break;
      case KVM_EXIT_MMIO:
        handle_mmio(mmio);
        completion_due = true;
        break;
      case KVM_EXIT_HLT:
        return {R::kHalted, img::strfmt("vCPU %u halted", id_)};
      case KVM_EXIT_SHUTDOWN:
        return {R::kShutdown, img::strfmt("vCPU %u: triple fault (KVM_EXIT_SHUTDOWN)", id_)};
      case KVM_EXIT_INTERNAL_ERROR: {
        std::string d = img::strfmt("vCPU %u: KVM internal error, suberror %u", id_,
                                    run_->internal.suberror);
        if (run_->internal.suberror == KVM_INTERNAL_ERROR_EMULATION) {
          d += " (instruction emulation failed)";
        }
        for (uint32_t i = 0; i < run_->internal.ndata && i < 16; ++i) {
          d += img::strfmt(" data[%u]=0x%llx", i, (unsigned long long)run_->internal.data[i]);
        }
        if (auto r = get_regs()) d += img::strfmt(" rip=0x%llx", (unsigned long long)r->rip);
        return {R::kInternalError, d};
      }
      case KVM_EXIT_FAIL_ENTRY:
        return {R::kInternalError,
                img::strfmt("vCPU %u: entry failed, hardware reason 0x%llx", id_,
                            (unsigned long long)run_->fail_entry.hardware_entry_failure_reason)};
      case KVM_EXIT_SYSTEM_EVENT:
        switch (run_->system_event.type) {
          case KVM_SYSTEM_EVENT_CRASH:
            return {R::kCrash, img::strfmt("vCPU %u: guest crash event", id_)};
          default:
            return {R::kSystemReset, img::strfmt("vCPU %u: system event %u", id_,
                                                 run_->system_event.type)};
        }
      case KVM_EXIT_INTR:
        break;
      default:
        return {R::kInternalError,
                img::strfmt("vCPU %u: unexpected exit reason %u", id_, run_->exit_reason)};
    }
  }
  return {R::kStopped, {}};
}

}  // namespace vmm
