// net-define, net-start, net-stop, net-list, net-undefine, net-autostart, net-info; domiflist
// and the network lookup of vmm start.
#include <sys/file.h>
#include <unistd.h>

#include <cstdio>

#include "lifecycle/commands.h"
#include "lifecycle/format.h"
#include "lifecycle/network.h"
#include "lifecycle/vm_access.h"

namespace vmm::lifecycle {

int cmd_net_define(const StateDir& sd, const std::string& name, const std::string& bridge,
                   const std::string& subnet) {
  if (auto s = check_name(name, "network"); !s) return fail(s.error().message());
  NetworkDef n{name, new_uuid(), bridge, std::nullopt, false};
  if (auto s = hostnet::check_link_name(bridge, "bridge"); !s) return fail(s.error().message());
  if (!subnet.empty()) {
    auto c = hostnet::parse_ipv4_cidr(subnet);
    if (!c) return fail(c.error().message());
    n.subnet = *c;
  }
  if (auto s = make_dirs(network_dir(sd)); !s) return fail(s.error().message());
  // Another network on the same bridge would tear this one down on its net-stop.
  for (const std::string& other : network_names(sd)) {
    if (other == name) continue;
    if (auto o = open_network(sd, other, LOCK_SH); o && o->def.bridge == bridge) {
      return fail("bridge " + bridge + " already belongs to network '" + other + "'");
    }
  }
  auto lock = FileLock::acquire(network_definition(sd, name), LOCK_EX, true);
  if (!lock) return fail(lock.error().message());
  auto text = read_locked(*lock, network_definition(sd, name));
  if (!text) return fail(text.error().message());
  if (!text->empty()) {
    // Redefining keeps the UUID and the autostart mark; an active network keeps its bridge.
    auto old = parse_network(*text, network_definition(sd, name));
    if (!old) return fail(old.error().message());
    n.uuid = old->uuid;
    n.autostart = old->autostart;
    bool same_subnet = old->subnet.has_value() == n.subnet.has_value() &&
                       (!n.subnet || (old->subnet->addr == n.subnet->addr &&
                                      old->subnet->prefix == n.subnet->prefix));
    if (network_active(sd, *old) && (old->bridge != n.bridge || !same_subnet)) {
      return fail("network '" + name + "' is active; stop it (vmm net-stop " + name +
                  ") before changing its bridge or subnet");
    }
  }
  if (auto s = write_file_atomic(network_definition(sd, name), to_json(n)); !s) {
    if (text->empty()) ::unlink(network_definition(sd, name).c_str());
    return fail(s.error().message());
  }
  std::printf("Network %s defined\n\n", name.c_str());
  return 0;
}

int cmd_net_start(const StateDir& sd, const std::string& name) {
  auto n = open_network(sd, name, LOCK_EX);
  if (!n) return fail(n.error().message());
  if (network_active(sd, n->def)) return fail("network '" + name + "' is already active");
  if (auto s = start_network(sd, n->def); !s) return fail(s.error().message());
  std::printf("Network %s started\n\n", name.c_str());
  return 0;
}

int cmd_net_stop(const StateDir& sd, const std::string& name) {
  auto n = open_network(sd, name, LOCK_EX);
  if (!n) return fail(n.error().message());
  if (!network_active(sd, n->def)) {
    ::unlink(network_marker(sd, name).c_str());
    return fail("network '" + name + "' is not active");
  }
  // The VMs' taps stay, off the bridge: their guests see the link go quiet, as with virsh.
  if (auto s = hostnet::delete_link(n->def.bridge); !s) {
    return fail("network '" + name + "': " + s.error().message());
  }
  ::unlink(network_marker(sd, name).c_str());
  std::printf("Network %s destroyed\n\n", name.c_str());
  return 0;
}

int cmd_net_list(const StateDir& sd, bool all) {
  std::vector<Row> rows;
  for (const std::string& name : network_names(sd)) {
    auto n = open_network(sd, name, LOCK_SH);
    if (!n) continue;  // not one of ours, or being rewritten
    bool active = network_active(sd, n->def);
    if (!all && !active) continue;
    rows.push_back({name, active ? "active" : "inactive", n->def.autostart ? "yes" : "no", "yes"});
  }
  std::fputs(format_table({"Name", "State", "Autostart", "Persistent"}, rows).c_str(), stdout);
  std::fputs("\n", stdout);
  return 0;
}

int cmd_net_undefine(const StateDir& sd, const std::string& name) {
  auto n = open_network(sd, name, LOCK_EX);
  if (!n) return fail(n.error().message());
  if (network_active(sd, n->def)) {
    return fail("network '" + name + "' is active; stop it first (vmm net-stop " + name + ")");
  }
  ::unlink(network_marker(sd, name).c_str());
  if (::unlink(network_definition(sd, name).c_str()) != 0) {
    return fail(img::io_error(errno, "removing " + network_definition(sd, name)).error().message());
  }
  std::printf("Network %s has been undefined\n\n", name.c_str());
  return 0;
}

int cmd_net_autostart(const StateDir& sd, const std::string& name, bool enable) {
  auto n = open_network(sd, name, LOCK_EX);
  if (!n) return fail(n.error().message());
  n->def.autostart = enable;
  if (auto s = write_file_atomic(network_definition(sd, name), to_json(n->def)); !s) {
    return fail(s.error().message());
  }
  std::printf("Network %s %s as autostarted\n\n", name.c_str(), enable ? "marked" : "unmarked");
  return 0;
}

int cmd_net_info(const StateDir& sd, const std::string& name) {
  auto n = open_network(sd, name, LOCK_SH);
  if (!n) return fail(n.error().message());
  const NetworkDef& d = n->def;
  std::vector<std::pair<std::string, std::string>> f = {
      {"Name", d.name},
      {"UUID", d.uuid},
      {"Active", network_active(sd, d) ? "yes" : "no"},
      {"Persistent", "yes"},
      {"Autostart", d.autostart ? "yes" : "no"},
      {"Bridge", d.bridge}};
  if (d.subnet) f.push_back({"Address", hostnet::format_ipv4_cidr(bridge_address(*d.subnet))});
  std::fputs(format_fields(f).c_str(), stdout);
  std::fputs("\n", stdout);
  return 0;
}

namespace {

std::string mac_of(const NetSpec& n) {
  std::string t = net_spec_text(n);
  size_t at = t.find(",mac=");
  return at == std::string::npos ? "-" : t.substr(at + 5);
}

// The taps of a running VM by NIC index, from its control socket; empty when it is shut off.
std::vector<std::string> running_taps(const StateDir& sd, const std::string& name) {
  std::vector<std::string> taps;
  if (!lock_held(sd.lock(name))) return taps;
  auto info = control_call(sd, name, "info");
  if (!info || !info->contains("nics") || !(*info)["nics"].is_array()) return taps;
  for (const auto& n : (*info)["nics"]) taps.push_back(n.value("tap", std::string("-")));
  return taps;
}

}  // namespace

int cmd_domiflist(const StateDir& sd, const std::string& name) {
  auto vm = open_vm(sd, name, LOCK_SH);
  if (!vm) return fail(vm.error().message());
  std::vector<std::string> taps = running_taps(sd, name);
  std::vector<Row> rows;
  const auto& nets = vm->def.config.nets;
  for (size_t i = 0; i < nets.size(); ++i) {
    const NetSpec& n = nets[i];
    std::string type = !n.network.empty() ? "network" : !n.bridge.empty() ? "bridge" : "ethernet";
    std::string source = !n.network.empty() ? n.network : !n.bridge.empty() ? n.bridge : "-";
    std::string iface = i < taps.size() ? taps[i] : n.tap.empty() ? "-" : n.tap;
    rows.push_back({iface, type, source, "virtio", mac_of(n)});
  }
  std::fputs(format_table({"Interface", "Type", "Source", "Model", "MAC"}, rows).c_str(), stdout);
  std::fputs("\n", stdout);
  return 0;
}

int cmd_domifstat(const StateDir& sd, const std::string& name, const std::string& iface) {
  auto vm = open_vm(sd, name, LOCK_SH);
  if (!vm) return fail(vm.error().message());
  auto st = control_call(sd, name, "nic-stats");
  if (!st) return fail(st.error().message());
  std::vector<std::string> taps = running_taps(sd, name);
  const auto& nets = vm->def.config.nets;
  for (size_t i = 0; i < taps.size() && i < (*st)["nics"].size(); ++i) {
    bool mac = i < nets.size() && mac_of(nets[i]) == iface;
    if (taps[i] != iface && !mac) continue;
    const auto& s = (*st)["nics"][i];
    // virsh's names and order, the guest's point of view (rx = what the guest received).
    for (auto [label, key] : {std::pair{"rx_bytes", "rx_bytes"},
                              {"rx_packets", "rx_packets"},
                              {"rx_errs", ""},
                              {"rx_drop", "rx_dropped"},
                              {"tx_bytes", "tx_bytes"},
                              {"tx_packets", "tx_packets"},
                              {"tx_errs", "tx_errors"},
                              {"tx_drop", "tx_dropped"}}) {
      uint64_t v = *key ? s.value(key, uint64_t{0}) : 0;
      std::printf("%s %s %llu\n", taps[i].c_str(), label, static_cast<unsigned long long>(v));
    }
    std::printf("\n");
    return 0;
  }
  return fail("VM '" + name + "' has no interface '" + iface + "' (vmm domiflist " + name + ")");
}

img::Status resolve_networks(const StateDir& sd, MachineConfig& c) {
  for (NetSpec& nic : c.nets) {
    if (nic.network.empty()) continue;
    auto n = open_network(sd, nic.network, LOCK_EX);
    if (!n) {
      if (n.error().code() == img::ErrorCode::kNotFound) {
        return img::make_error(img::ErrorCode::kNotFound, "network '" + nic.network +
                                                              "' is not defined (vmm net-define " +
                                                              nic.network + " --bridge BR)");
      }
      return img::Unexpected(n.error());
    }
    if (!network_active(sd, n->def)) {
      if (!n->def.autostart) {
        return img::invalid_argument("network '" + nic.network + "' is not active (vmm net-start " +
                                     nic.network + ")");
      }
      RETURN_IF_ERROR(start_network(sd, n->def));
      std::fprintf(stderr, "vmm: started network '%s' (autostart)\n", nic.network.c_str());
    }
    nic.bridge = n->def.bridge;
    nic.network.clear();
  }
  return {};
}

}  // namespace vmm::lifecycle
