// Opening one defined VM for a subcommand: the name checked, the definition locked and parsed,
// errors phrased for the user ("no VM named 'x' in DIR").
//
// Thread-safety: plain values.
#pragma once

#include <sys/file.h>

#include <string>

#include "lifecycle/definition.h"
#include "lifecycle/state_dir.h"

namespace vmm::lifecycle {

struct OpenVm {
  Definition def;
  FileLock lock;  // on DIR/NAME.json, held until the command ends
};

// lock_op: LOCK_EX for commands that change the VM, LOCK_SH for those that only read it.
img::Result<OpenVm> open_vm(const StateDir& sd, const std::string& name, int lock_op = LOCK_EX);

}  // namespace vmm::lifecycle
