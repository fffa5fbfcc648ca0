// The state directory of `vmm define/start/list/...` (docs/vmm-lifecycle.md):
//
//   DIR/NAME.json            the definition (definition.h); flock()ed by every command that acts
//                            on the VM, so two commands racing on one VM run one after the other
//   DIR/run/NAME/lock        flock()ed (exclusive) by the VM's processes for as long as they live:
//                            the kernel drops the lock when they die, even by SIGKILL, so a held
//                            lock is the one reliable sign that the VM runs
//   DIR/run/NAME/pid         the `vmm run` process (the Id in `vmm list`)
//   DIR/run/NAME/control.sock, console.sock, serial.sock, log, console.log
//
// A pid file is trusted only when the lock is held and /proc/PID/cmdline is `vmm run` with this
// VM's control socket: a pid left by a vmm that was killed may since name another process.
//
// Thread-safety: plain values and functions on the file system.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "img/status.h"

namespace vmm::lifecycle {

struct StateDir {
  std::string root;

  std::string definition(const std::string& name) const { return root + "/" + name + ".json"; }
  std::string run_dir(const std::string& name) const { return root + "/run/" + name; }
  std::string lock(const std::string& n) const { return run_dir(n) + "/lock"; }
  std::string pid(const std::string& n) const { return run_dir(n) + "/pid"; }
  std::string control(const std::string& n) const { return run_dir(n) + "/control.sock"; }
  std::string console(const std::string& n) const { return run_dir(n) + "/console.sock"; }
  std::string serial(const std::string& n) const { return run_dir(n) + "/serial.sock"; }
  std::string log(const std::string& n) const { return run_dir(n) + "/log"; }
  std::string console_log(const std::string& n) const { return run_dir(n) + "/console.log"; }

  // The names of the defined VMs, sorted.
  std::vector<std::string> names() const;
};

// $XDG_STATE_HOME/vmm, else /var/lib/vmm as root, else $HOME/.local/state/vmm.
img::Result<std::string> default_state_dir();

// An flock() held until destruction (the fd is closed).
class FileLock {
 public:
  // Opens path (O_CREAT when create) and locks it with op (LOCK_EX, LOCK_SH, | LOCK_NB).
  // cloexec=false keeps the fd (and so the lock) across exec. A lock that is busy under LOCK_NB
  // is an error with errno EWOULDBLOCK; a missing file without create has ENOENT.
  static img::Result<FileLock> acquire(const std::string& path, int op, bool create,
                                       bool cloexec = true);
  FileLock() = default;
  FileLock(FileLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  FileLock& operator=(FileLock&& o) noexcept;
  ~FileLock();
  int fd() const { return fd_; }
  int release();  // gives up ownership of the fd (returns it)

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// Writes text to path through a temporary file, fsync and rename: readers see the old file or
// the new one, never half of one.
img::Status write_file_atomic(const std::string& path, const std::string& text);
// mkdir -p.
img::Status make_dirs(const std::string& dir);
// The whole file behind a lock's fd (at most 16 MiB: a definition, never an image).
img::Result<std::string> read_locked(const FileLock& lock, const std::string& path);

// Whether some process holds an exclusive flock on path (probed with a shared, non-blocking
// flock that is dropped at once). A missing file is not held.
bool lock_held(const std::string& path);
// Whether pid is a live `vmm run` whose --control is control_path (/proc/PID/cmdline).
bool is_vmm_run(pid_t pid, const std::string& control_path);
// The pid in the file, if it holds one positive decimal number.
std::optional<pid_t> read_pid(const std::string& path);
// Writes "PID\n" atomically (temp file + rename).
img::Status write_pid(const std::string& path, pid_t pid);

enum class VmState { kShutOff, kRunning, kPaused, kNoState };
const char* state_text(VmState s);  // "shut off", "running", "paused", "no state" (virsh's words)

}  // namespace vmm::lifecycle
