// The virsh-like subcommands over a state directory (docs/vmm-lifecycle.md). Each prints what
// virsh prints on stdout, or one line "vmm: ..." on stderr, and returns the exit code (0, or 1
// for a failure; 2 for bad arguments is left to the CLI).
//
// Every command that acts on one VM holds an flock on its definition file while it runs, so two
// commands racing on one VM are serialised; whether the VM runs is decided by the lock its
// processes hold (state_dir.h), never by a pid file alone.
//
// Thread-safety: one command per process.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "lifecycle/definition.h"
#include "lifecycle/state_dir.h"

namespace vmm::lifecycle {

// What a probe of one VM found.
struct VmStatus {
  VmState state = VmState::kShutOff;
  std::optional<pid_t> pid;  // the `vmm run` process, when it runs and is verified
  nlohmann::json info;       // the control socket's info reply, when it answered
};
VmStatus probe(const StateDir& sd, const std::string& name);

int cmd_define_file(const StateDir& sd, const std::string& file);
int cmd_define(const StateDir& sd, const std::string& name, const MachineConfig& cfg);
int cmd_start(const StateDir& sd, const std::string& name, const std::string& vmm_exe);
int cmd_list(const StateDir& sd, bool all);
int cmd_shutdown(const StateDir& sd, const std::string& name, std::optional<double> timeout_s);
int cmd_reboot(const StateDir& sd, const std::string& name);
// virsh reset: the machine reset at once, without asking the guest.
int cmd_reset(const StateDir& sd, const std::string& name);
int cmd_destroy(const StateDir& sd, const std::string& name);
int cmd_suspend(const StateDir& sd, const std::string& name, bool resume);
int cmd_undefine(const StateDir& sd, const std::string& name, bool remove_storage);
int cmd_dominfo(const StateDir& sd, const std::string& name);
int cmd_domblklist(const StateDir& sd, const std::string& name);
int cmd_console(const StateDir& sd, const std::string& name);
int cmd_setmem(const StateDir& sd, const std::string& name, uint64_t bytes);
// disk: a virtio-blk target (vda...) or the image path the definition names.
int cmd_blockresize(const StateDir& sd, const std::string& name, const std::string& disk,
                    uint64_t bytes);

// Networks (network.h), virsh's net-* commands.
int cmd_net_define(const StateDir& sd, const std::string& name, const std::string& bridge,
                   const std::string& subnet);
int cmd_net_start(const StateDir& sd, const std::string& name);
int cmd_net_stop(const StateDir& sd, const std::string& name);  // virsh net-destroy
int cmd_net_list(const StateDir& sd, bool all);
int cmd_net_undefine(const StateDir& sd, const std::string& name);
int cmd_net_autostart(const StateDir& sd, const std::string& name, bool enable);
int cmd_net_info(const StateDir& sd, const std::string& name);
// The VM's interfaces (virsh domiflist): Interface, Type, Source, Model, MAC.
int cmd_domiflist(const StateDir& sd, const std::string& name);
// For vmm start: each NIC on network=NAME becomes bridge=ITS-BRIDGE. An inactive network is
// started first when it is marked autostart, else it is an error naming net-start.
img::Status resolve_networks(const StateDir& sd, MachineConfig& c);

// The VM must run; then `cmd` goes over its control socket and its "return" comes back.
img::Result<nlohmann::json> control_call(const StateDir& sd, const std::string& name,
                                         const std::string& cmd,
                                         const nlohmann::json& args = nullptr);
// virsh domifstat: one NIC's counters ("tap0 rx_bytes 1234" lines); iface is its tap or MAC.
int cmd_domifstat(const StateDir& sd, const std::string& name, const std::string& iface);

// Prints "vmm: msg" on stderr; returns 1.
int fail(const std::string& msg);

}  // namespace vmm::lifecycle
