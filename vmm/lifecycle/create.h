// vmm create: virt-install's everyday form on the lifecycle's state directory. It makes the disk
// images with libimg (a fresh raw or qcow2 image, or a qcow2 overlay on a base image), defines
// the VM and, with --start, starts it (docs/vmm-lifecycle.md#create).
//
//   --disk size=1G[,format=qcow2|raw][,path=P]   a new image (default DIR/images/NAME-vdX.FORMAT)
//   --disk path=P,backing=BASE                   a new qcow2 overlay on BASE (its size and format)
//   --disk path=P                                an existing image, used as it is (--import)
//   each also [,cache=none|writeback][,readonly=on]
//
// Thread-safety: one command per process.
#pragma once

#include <string>
#include <vector>

#include "lifecycle/state_dir.h"

namespace vmm::lifecycle {

struct CreateArgs {
  std::string name, memory = "512M", kernel, initrd, cmdline;
  uint32_t vcpus = 1;
  std::vector<std::string> disks, networks;
  bool start = false;
};

int cmd_create(const StateDir& sd, const CreateArgs& a, const std::string& vmm_exe);

}  // namespace vmm::lifecycle
