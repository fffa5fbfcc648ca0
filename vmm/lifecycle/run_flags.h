// The flags of `vmm run`, registered on a CLI11 subcommand and turned into a MachineConfig. One
// copy for every subcommand that takes them: `vmm run` and `vmm define --name NAME` (a definition
// holds whatever `vmm run` accepts, docs/vmm-lifecycle.md).
//
// Thread-safety: plain values.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "img/status.h"
#include "machine/config.h"

namespace vmm::lifecycle {

// The raw strings CLI11 fills in; to_config() parses and validates them.
struct RunFlags {
  MachineConfig cfg;  // the fields CLI11 sets directly (kernel, cmdline, cpus, serial, ...)
  std::string memory = "512M";
  std::string on_reboot;  // add_run_flags sets the default: destroy for run, restart for define
  std::vector<std::string> disks, scsi, nets, serial_ports;
  std::string rng, console, balloon;
  bool no_pvm_workarounds = false;
};

// Adds the flags to cmd (--seccomp, --user and --group included: a definition keeps them);
// `with_host_io` adds --serial and --control too and makes --kernel
// required (vmm run only: a defined VM's serial port is its console socket and its control socket
// lives in the state directory; `vmm define FILE` takes no --kernel).
void add_run_flags(CLI::App& cmd, RunFlags& f, bool with_host_io);
// REQUIRES: cmd has parsed. Errors name the flag.
img::Result<MachineConfig> to_config(const CLI::App& cmd, const RunFlags& f);

}  // namespace vmm::lifecycle
