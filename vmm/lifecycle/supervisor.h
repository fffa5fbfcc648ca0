// The background half of `vmm start`: a small process that owns a defined VM's runtime
// directory while the VM lives.
//
// It holds DIR/run/NAME/lock (inherited from `vmm start`, and passed on to `vmm run`, so the lock
// stays held while either process lives), runs `vmm run ... --serial unix:serial.sock --control
// control.sock` with stdout and stderr on the log, and relays the guest's serial port: every byte
// goes to console.log (capped) and to the one client attached to console.sock (`vmm console`),
// whose keystrokes go back to the guest. A reboot happens inside `vmm run` (reset in place, the
// definition's on_reboot), so the end of `vmm run` ends the supervisor, which removes the runtime
// files but the log.
//
// Thread-safety: single-threaded process.
#pragma once

#include <string>
#include <vector>

#include "lifecycle/state_dir.h"

namespace vmm::lifecycle {

// REQUIRES: runs in a child forked by `vmm start`, holding the VM lock on an inherited fd;
// `vmm_exe` is the vmm binary. Never returns: exits with `vmm run`'s exit code (128 + signal).
[[noreturn]] void supervise(const StateDir& sd, const std::string& name,
                            const std::vector<std::string>& run_args, const std::string& vmm_exe);

// The console relay's cap on console.log: past it the file starts again from empty.
inline constexpr size_t kConsoleLogMax = 8u << 20;

}  // namespace vmm::lifecycle
