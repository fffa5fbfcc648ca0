// vmm clone: virt-clone on the lifecycle's state directory (docs/vmm-lifecycle.md#clone). The
// source VM must be shut off and stays untouched; the clone gets a new name (NAME-clone, then
// NAME-clone1, ... when taken), a new UUID, new MACs and new taps, and its own disks: each
// writable disk copied through libimg (a full, flattened copy with a progress bar on a terminal)
// or, with --linked, a qcow2 overlay on the source's disk. Read-only disks are shared.
//
// Thread-safety: one command per process.
#pragma once

#include <string>

#include "lifecycle/state_dir.h"

namespace vmm::lifecycle {

struct CloneArgs {
  std::string original, name;
  bool auto_clone = false, linked = false;
};

int cmd_clone(const StateDir& sd, const CloneArgs& a);

}  // namespace vmm::lifecycle
