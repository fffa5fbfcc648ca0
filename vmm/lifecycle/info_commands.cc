// probe, list, dominfo, domblklist: what a VM is and whether it runs.
#include <sys/file.h>

#include <cstdio>

#include "lifecycle/commands.h"
#include "lifecycle/control_client.h"
#include "lifecycle/format.h"
#include "lifecycle/vm_access.h"

namespace vmm::lifecycle {

VmStatus probe(const StateDir& sd, const std::string& name) {
  VmStatus s;
  if (!lock_held(sd.lock(name))) return s;  // no process holds the lock: shut off, whatever is left
  auto pid = read_pid(sd.pid(name));
  if (pid && is_vmm_run(*pid, sd.control(name))) s.pid = pid;
  s.state = VmState::kNoState;  // starting, rebooting or not answering
  if (auto c = ControlClient::connect(sd.control(name), 2000)) {
    if (auto info = c->call("info")) {
      s.info = *info;
      std::string st = info->value("state", std::string());
      if (st == "running") s.state = VmState::kRunning;
      if (st == "paused") s.state = VmState::kPaused;
    }
  }
  return s;
}

int cmd_list(const StateDir& sd, bool all) {
  std::vector<Row> rows;
  for (const std::string& name : sd.names()) {
    if (!check_name(name)) continue;  // not one of ours
    VmStatus s = probe(sd, name);
    if (!all && s.state == VmState::kShutOff) continue;
    rows.push_back({s.pid ? std::to_string(*s.pid) : "-", name, state_text(s.state)});
  }
  std::fputs(format_table({"Id", "Name", "State"}, rows).c_str(), stdout);
  std::fputs("\n", stdout);
  return 0;
}

int cmd_dominfo(const StateDir& sd, const std::string& name) {
  auto vm = open_vm(sd, name, LOCK_SH);
  if (!vm) return fail(vm.error().message());
  const MachineConfig& c = vm->def.config;
  VmStatus s = probe(sd, name);
  uint64_t used = c.memory;
  // The guest keeps its memory less what the balloon asks for (virsh's "Used memory").
  if (s.state != VmState::kShutOff && s.info.contains("balloon") &&
      s.info["balloon"].contains("target")) {
    used = s.info["balloon"]["target"].get<uint64_t>();
  } else if (s.state != VmState::kShutOff && c.balloon && c.balloon->target) {
    used = *c.balloon->target;
  }
  std::fputs(format_fields({{"Id", s.pid ? std::to_string(*s.pid) : "-"},
                            {"Name", name},
                            {"UUID", vm->def.uuid},
                            {"OS Type", "hvm"},
                            {"State", state_text(s.state)},
                            {"CPU(s)", std::to_string(c.cpus)},
                            {"Max memory", kib(c.memory)},
                            {"Used memory", kib(used)},
                            {"Persistent", "yes"},
                            {"Autostart", "disable"}})
                 .c_str(),
             stdout);
  std::fputs("\n", stdout);
  return 0;
}

int cmd_domblklist(const StateDir& sd, const std::string& name) {
  auto vm = open_vm(sd, name, LOCK_SH);
  if (!vm) return fail(vm.error().message());
  std::vector<Row> rows;
  const MachineConfig& c = vm->def.config;
  for (size_t i = 0; i < c.disks.size(); ++i)
    rows.push_back({disk_target(false, i), c.disks[i].path});
  for (size_t i = 0; i < c.scsi.size(); ++i) rows.push_back({disk_target(true, i), c.scsi[i].path});
  std::fputs(format_table({"Target", "Source"}, rows).c_str(), stdout);
  std::fputs("\n", stdout);
  return 0;
}

}  // namespace vmm::lifecycle
