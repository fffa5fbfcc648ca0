#include "security/seccomp.h"

#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "kvm/kvm_abi.h"

namespace vmm::security {
namespace {

std::atomic<SeccompMode> g_mode{SeccompMode::kOff};

// What every VMM thread may do: memory management (malloc arenas, thread stacks, guest RAM),
// locks and condition variables, reading and writing descriptors it already holds, the clock,
// its own end (exit, and abort()'s raise: tgkill), and stderr logging (fprintf may fstat). The
// list was found with `strace -f` on the e2e tests (docs/vmm-security.md) and by reading the
// error paths: glibc's abort() is rt_sigprocmask + tgkill (+ rt_sigaction to reset SIGABRT).
std::vector<SyscallRule> common() {
  return {
      {SYS_read, {}},
      {SYS_write, {}},
      {SYS_readv, {}},
      {SYS_writev, {}},
      {SYS_pread64, {}},
      {SYS_pwrite64, {}},
      {SYS_preadv, {}},
      {SYS_pwritev, {}},
      {SYS_close, {}},
      {SYS_lseek, {}},
      {SYS_fstat, {}},
      {SYS_newfstatat, {}},
      {SYS_futex, {}},
      {SYS_mmap, {}},
      {SYS_munmap, {}},
      {SYS_mprotect, {}},
      {SYS_madvise, {}},
      {SYS_mremap, {}},
      {SYS_brk, {}},
      {SYS_rt_sigprocmask, {}},
      {SYS_rt_sigreturn, {}},
      {SYS_rt_sigaction, {}},
      {SYS_sigaltstack, {}},
      {SYS_getpid, {}},
      {SYS_gettid, {}},
      {SYS_tgkill, {}},
      {SYS_exit, {}},
      {SYS_exit_group, {}},
      {SYS_clock_gettime, {}},
      {SYS_clock_nanosleep, {}},
      {SYS_nanosleep, {}},
      {SYS_gettimeofday, {}},
      {SYS_sched_yield, {}},
      {SYS_restart_syscall, {}},
      {SYS_getrandom, {}},
      {SYS_rseq, {}},
      {SYS_set_robust_list, {}},
  };
}

void add(std::vector<SyscallRule>& to, std::vector<SyscallRule> more) {
  for (auto& r : more) to.push_back(std::move(r));
}

// A device thread: its io_uring loop (libimg's IoLoop: io_uring_enter; the synchronous fallback
// uses the plain calls: fsync, fdatasync, fallocate, the p*v calls above), the loop's parked polls
// (poll/ppoll), QueueServer::wait's epoll set and sleep_for's timerfd, the tap (read/writev), an
// NBD disk's socket (sendmsg/recvmsg on the connection made at set-up), the balloon's madvise on
// guest RAM, the serial input thread's poll and KVM_IRQ_LINE (the UART's interrupt), and
// QueueServer::stop's eventfd writes. TCGETS: isatty() in stdio.
std::vector<SyscallRule> device() {
  std::vector<SyscallRule> r = common();
  add(r, {
             {SYS_io_uring_enter, {}},
             {SYS_poll, {}},
             {SYS_ppoll, {}},
             {SYS_epoll_create1, {}},
             {SYS_epoll_ctl, {}},
             {SYS_epoll_wait, {}},
             {SYS_epoll_pwait, {}},
             {SYS_timerfd_create, {}},
             {SYS_timerfd_settime, {}},
             {SYS_eventfd2, {}},
             {SYS_fsync, {}},
             {SYS_fdatasync, {}},
             {SYS_fallocate, {}},
             {SYS_ftruncate, {}},
             {SYS_sendmsg, {}},
             {SYS_recvmsg, {}},
             {SYS_sendto, {}},
             {SYS_recvfrom, {}},
             {SYS_ioctl, {KVM_IRQ_LINE, TCGETS}},
         });
  return r;
}

// A vCPU thread: KVM_RUN, and what its exits run on this thread: PIO/MMIO handlers of the
// devices (serial, i8042, RTC, PCI config and BARs), which program MSI-X routes
// (eventfd2, KVM_SET_GSI_ROUTING, KVM_IRQFD), move queue notifications (KVM_IOEVENTFD), raise
// legacy lines (KVM_IRQ_LINE), set a tap's offloads on a virtio-net DRIVER_OK (TUNSETOFFLOAD),
// start a device (eventfd2; the thread itself comes from the spawner) and stop one on reset
// (eventfd writes, join). KVM_GET_REGS: the internal-error report. The serial port writes to its
// file, terminal or socket with write().
std::vector<SyscallRule> vcpu() {
  std::vector<SyscallRule> r = common();
  add(r, {
             {SYS_eventfd2, {}},
             {SYS_ioctl,
              {KVM_RUN, KVM_GET_REGS, KVM_IRQ_LINE, KVM_IRQFD, KVM_IOEVENTFD,
               kvm_abi::kSetGsiRouting, TUNSETOFFLOAD, TCGETS}},
         });
  return r;
}

// The spawner: creates device threads (clone3, or clone where glibc falls back), and runs nothing
// else. Its threads inherit its filter before they install their own, so its list must hold
// theirs (the device list) and what installing one takes: libseccomp's seccomp_load() sets
// PR_SET_NO_NEW_PRIVS with prctl, then calls seccomp() (a filter added only narrows the list);
// and PR_SET_NAME, with which a new thread names itself (enter_thread) before its own filter.
std::vector<SyscallRule> spawner() {
  std::vector<SyscallRule> r = device();
  add(r, {{SYS_clone, {}},
          {SYS_clone3, {}},
          {SYS_sched_getaffinity, {}},
          {SYS_seccomp, {}},
          {SYS_prctl, {PR_SET_NO_NEW_PRIVS, PR_SET_NAME}}});
  return r;
}

// The main thread: its epoll loop (control socket clients: accept4, recv/send; the signalfd; the
// shutdown timer's timerfd), control commands (pause/resume wake vCPUs with tgkill; shutdown
// presses Ctrl-Alt-Del, the i8042's KVM_IRQ_LINE; balloon config changes write an irqfd), and
// the teardown after the loop: joining threads, closing the images through libimg's loop
// (io_uring_enter, fsync/fdatasync, ftruncate), deassigning irqfds and ioeventfds, restoring the
// terminal (TCSETS*), removing the control socket (unlink). TIOCGWINSZ: on SIGWINCH, the new size
// of a --console stdio terminal. A reset in place (machine_reset.cc) puts the vCPUs' saved state
// back (KVM_SET_REGS ... KVM_SET_DEBUGREGS), and the irqchip's and PIT's (KVM_SET_IRQCHIP,
// KVM_SET_PIT2), and zeroes guest RAM (madvise, in the common list).
std::vector<SyscallRule> main_thread() {
  std::vector<SyscallRule> r = common();
  add(r, {
             {SYS_epoll_create1, {}},
             {SYS_epoll_ctl, {}},
             {SYS_epoll_wait, {}},
             {SYS_epoll_pwait, {}},
             {SYS_accept4, {}},
             {SYS_accept, {}},
             {SYS_recvfrom, {}},
             {SYS_recvmsg, {}},
             {SYS_sendto, {}},
             {SYS_sendmsg, {}},
             {SYS_shutdown, {}},
             {SYS_getsockopt, {}},
             {SYS_fcntl, {}},
             {SYS_poll, {}},
             {SYS_ppoll, {}},
             {SYS_timerfd_create, {}},
             {SYS_timerfd_settime, {}},
             {SYS_timerfd_gettime, {}},
             {SYS_eventfd2, {}},
             {SYS_io_uring_enter, {}},
             {SYS_fsync, {}},
             {SYS_fdatasync, {}},
             {SYS_fallocate, {}},
             {SYS_ftruncate, {}},
             {SYS_unlink, {}},
             {SYS_unlinkat, {}},
             {SYS_ioctl,
              {KVM_IRQ_LINE,
               KVM_IRQFD,
               KVM_IOEVENTFD,
               kvm_abi::kSetGsiRouting,
               TCGETS,
               TCSETS,
               TCSETSW,
               TCSETSF,
               TIOCGWINSZ,
               KVM_SET_REGS,
               kvm_abi::kSetXsave,
               KVM_SET_FPU,
               KVM_SET_XCRS,
               KVM_SET_SREGS,
               kvm_abi::kSetMsrs,
               KVM_SET_MP_STATE,
               KVM_SET_LAPIC,
               KVM_SET_VCPU_EVENTS,
               KVM_SET_DEBUGREGS,
               KVM_SET_IRQCHIP,
               KVM_SET_PIT2}},
         });
  return r;
}

}  // namespace

img::Result<SeccompMode> parse_seccomp_mode(const std::string& s) {
  if (s == "off") return SeccompMode::kOff;
  if (s == "log") return SeccompMode::kLog;
  if (s == "on") return SeccompMode::kOn;
  return img::invalid_argument("--seccomp must be off, log or on, not '" + s + "'");
}

const char* thread_kind_name(ThreadKind kind) {
  switch (kind) {
    case ThreadKind::kVcpu:
      return "vcpu";
    case ThreadKind::kDevice:
      return "device";
    case ThreadKind::kSpawner:
      return "spawner";
    case ThreadKind::kMain:
      return "main";
  }
  return "?";
}

std::vector<SyscallRule> allowed_syscalls(ThreadKind kind) {
  switch (kind) {
    case ThreadKind::kVcpu:
      return vcpu();
    case ThreadKind::kDevice:
      return device();
    case ThreadKind::kSpawner:
      return spawner();
    case ThreadKind::kMain:
      return main_thread();
  }
  return {};
}

img::Status install_filter(ThreadKind kind, SeccompMode mode) {
  if (mode == SeccompMode::kOff) return {};
  const char* name = thread_kind_name(kind);
  uint32_t deny = mode == SeccompMode::kOn ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_LOG;
  scmp_filter_ctx ctx = seccomp_init(deny);
  if (!ctx) return img::io_error(ENOMEM, img::strfmt("seccomp_init (%s thread)", name));
  struct Release {
    scmp_filter_ctx c;
    ~Release() { seccomp_release(c); }
  } release{ctx};
  // Without NO_NEW_PRIVS, loading a filter needs CAP_SYS_ADMIN; the VMM execs nothing anyway.
  int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1);
  if (rc == 0 && mode == SeccompMode::kLog) rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_LOG, 1);
  if (rc < 0) return img::io_error(-rc, img::strfmt("seccomp attributes (%s thread)", name));
  for (const SyscallRule& r : allowed_syscalls(kind)) {
    if (r.nr == SYS_tgkill) {
      // Signals to this process's own threads only (vCPU kicks, abort()), never to another.
      rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r.nr, 1,
                            SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(getpid())));
    } else if (r.nr != SYS_ioctl && r.nr != SYS_prctl) {
      rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r.nr, 0);
    } else {
      // Only the listed first (prctl: option) or second (ioctl: request) argument. The kernel
      // reads ioctl's request as an unsigned int (fs/ioctl.c), so compare 32 bits.
      for (unsigned long cmd : r.args) {
        if (r.nr == SYS_prctl) {
          rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r.nr, 1, SCMP_A0(SCMP_CMP_EQ, cmd));
          if (rc < 0) break;
          continue;
        }
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r.nr, 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, cmd & 0xffffffffu));
        if (rc < 0) break;
      }
    }
    if (rc < 0) {
      return img::io_error(-rc, img::strfmt("seccomp rule for syscall %d (%s thread)", r.nr, name));
    }
  }
  // Opening a file fails with EACCES rather than killing: glibc's malloc opens
  // /proc/sys/vm/overcommit_memory the first time it shrinks a thread's arena (malloc/arena.c,
  // check_may_shrink_heap) and copes when it cannot, so a free() must not end the VM; a subverted
  // thread still opens nothing.
  for (int nr : {SYS_open, SYS_openat, SYS_openat2}) {
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), nr, 0);
    if (rc < 0) return img::io_error(-rc, img::strfmt("seccomp rule for open (%s thread)", name));
  }
  rc = seccomp_load(ctx);
  if (rc < 0)
    return img::io_error(-rc, img::strfmt("loading the %s thread's seccomp filter", name));
  return {};
}

void set_process_mode(SeccompMode mode) { g_mode.store(mode); }
SeccompMode process_mode() { return g_mode.load(); }

void name_this_thread(const std::string& name) {
  // pthread_setname_np on the calling thread is prctl(PR_SET_NAME): before any filter, and it
  // refuses (ERANGE) names over 15 bytes, hence the cut.
  (void)pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

img::Status enter_thread(ThreadKind kind, const std::string& name) {
  name_this_thread(name.empty() ? std::string("vmm-") + thread_kind_name(kind) : name);
  return install_filter(kind, process_mode());
}

}  // namespace vmm::security
