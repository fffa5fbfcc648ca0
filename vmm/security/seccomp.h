// Per-thread seccomp filters (libseccomp): each kind of VMM thread installs its own allow-list once
// its set-up is done, so a thread that a hostile guest subverts can make only the system calls
// that thread needs. The lists and why each entry is there: seccomp.cc; the threat model:
// docs/vmm-security.md.
//
// Filters are per thread (no SECCOMP_FILTER_FLAG_TSYNC) and inherited by threads the filtered
// thread creates; stacked filters all apply (the most restrictive action wins). That is why vCPU
// threads never create threads themselves: a device activated by a guest's DRIVER_OK write gets
// its thread from the spawner thread (thread_spawner.h), whose list is the device list plus what
// thread creation needs.
//
// Default action: kOn kills the whole process (SECCOMP_RET_KILL_PROCESS, as Firecracker does), so
// a subverted thread cannot linger and the VM does not run on with a vCPU or device silently gone;
// the supervisor and `vmm run`'s caller see the process end by SIGSYS. kLog allows and logs (the
// kernel's audit log, dmesg: SCMP_ACT_LOG) to find a missing entry.
//
// Thread-safety: the process-wide mode is set once by main before any thread starts.
#pragma once

#include <string>
#include <vector>

#include "img/status.h"

namespace vmm::security {

enum class SeccompMode { kOff, kLog, kOn };
enum class ThreadKind {
  kVcpu,     // KVM_RUN and the PIO/MMIO exits it handles (device registers, activation, reset)
  kDevice,   // a virtio device's io_uring loop, the serial input thread, libimg's thread pool
  kSpawner,  // creates device threads for vCPUs: the device list plus clone
  kMain,     // the event loop: control socket, signals, the shutdown timer, teardown
};

// "off", "log" or "on".
img::Result<SeccompMode> parse_seccomp_mode(const std::string& s);
const char* thread_kind_name(ThreadKind kind);

// One allowed system call; ioctl and prctl only with the listed request / option.
struct SyscallRule {
  int nr;                           // x86-64 syscall number
  std::vector<unsigned long> args;  // ioctl: allowed requests; prctl: allowed options
};
std::vector<SyscallRule> allowed_syscalls(ThreadKind kind);

// Installs kind's filter on the calling thread (mode kOff: does nothing). REQUIRES: the thread's
// set-up is done; nothing this thread does afterwards may need a call outside its list.
img::Status install_filter(ThreadKind kind, SeccompMode mode);

// The process-wide mode that enter_thread() applies (default kOff, so tests that drive devices
// directly run unfiltered); `vmm run` sets it from --seccomp before any thread starts.
void set_process_mode(SeccompMode mode);
SeccompMode process_mode();
// Called first thing on each VMM thread: names the thread (`name`, cut to the 15 bytes Linux
// keeps; default "vmm-" + the kind's name) so that top -H, ps -L and /proc/PID/task/TID/comm
// tell vCPUs from devices, then install_filter(kind, process_mode()).
img::Status enter_thread(ThreadKind kind, const std::string& name = "");
// Names the calling thread (the same cut); what enter_thread does first.
void name_this_thread(const std::string& name);

}  // namespace vmm::security
