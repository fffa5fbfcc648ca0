#include "lifecycle/network.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "lifecycle/definition.h"

namespace vmm::lifecycle {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

img::Result<NetworkDef> parse(const Json& j, const std::string& src) {
  auto bad = [&](const std::string& m) { return img::invalid_argument(src + ": " + m); };
  if (!j.is_object()) return bad("must be a JSON object");
  static const std::set<std::string> known = {"format", "version", "name",     "uuid",
                                              "bridge", "subnet",  "autostart"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!known.contains(it.key())) return bad("unknown member '" + it.key() + "'");
  }
  auto str = [&](const char* k, bool required) -> img::Result<std::string> {
    if (!j.contains(k) || j.at(k).is_null()) {
      if (required) return bad(std::string("missing member '") + k + "'");
      return std::string();
    }
    if (!j.at(k).is_string()) return bad(std::string("'") + k + "' must be a string");
    return j.at(k).get<std::string>();
  };
  ASSIGN_OR_RETURN(std::string format, str("format", true));
  if (format != kNetworkFormat) {
    return bad("'format' is '" + format + "', not '" + kNetworkFormat + "'");
  }
  if (!j.contains("version") || !j.at("version").is_number_unsigned()) {
    return bad("'version' must be a non-negative integer");
  }
  if (j.at("version").get<uint64_t>() != kNetworkVersion) {
    return bad("version " + std::to_string(j.at("version").get<uint64_t>()) +
               " is not supported (this vmm reads version " + std::to_string(kNetworkVersion) +
               ")");
  }
  NetworkDef n;
  ASSIGN_OR_RETURN(n.name, str("name", true));
  if (auto s = check_name(n.name, "network"); !s) return bad(s.error().message());
  ASSIGN_OR_RETURN(n.uuid, str("uuid", false));
  ASSIGN_OR_RETURN(n.bridge, str("bridge", true));
  if (auto s = hostnet::check_link_name(n.bridge, "bridge"); !s) return bad(s.error().message());
  ASSIGN_OR_RETURN(std::string subnet, str("subnet", false));
  if (!subnet.empty()) {
    auto c = hostnet::parse_ipv4_cidr(subnet);
    if (!c) return bad(c.error().message());
    n.subnet = *c;
  }
  if (j.contains("autostart") && !j.at("autostart").is_null()) {
    if (!j.at("autostart").is_boolean()) return bad("'autostart' must be true or false");
    n.autostart = j.at("autostart").get<bool>();
  }
  return n;
}

}  // namespace

img::Result<NetworkDef> parse_network(const std::string& text, const std::string& source) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return img::invalid_argument(source + ": not valid JSON");
  return parse(j, source);
}

std::string to_json(const NetworkDef& n) {
  Json j = {{"format", kNetworkFormat}, {"version", kNetworkVersion}, {"name", n.name},
            {"uuid", n.uuid},           {"bridge", n.bridge},         {"autostart", n.autostart}};
  j["subnet"] = n.subnet ? Json(hostnet::format_ipv4_cidr(*n.subnet)) : Json(nullptr);
  return j.dump(2) + "\n";
}

hostnet::Ipv4Cidr bridge_address(const hostnet::Ipv4Cidr& s) {
  uint32_t host_mask = 0xffffffffu >> s.prefix;
  if ((s.addr & host_mask) == 0) return {s.addr + 1, s.prefix};
  return s;
}

std::string network_dir(const StateDir& sd) { return sd.root + "/networks"; }
std::string network_definition(const StateDir& sd, const std::string& name) {
  return network_dir(sd) + "/" + name + ".json";
}
std::string network_marker(const StateDir& sd, const std::string& name) {
  return network_dir(sd) + "/" + name + ".active";
}

std::vector<std::string> network_names(const StateDir& sd) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(network_dir(sd), ec)) {
    std::string f = e.path().filename().string();
    if (f.size() > 5 && f.ends_with(".json") && e.is_regular_file(ec)) {
      std::string name = f.substr(0, f.size() - 5);
      if (check_name(name)) out.push_back(name);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool network_active(const StateDir& sd, const NetworkDef& n) {
  std::ifstream f(network_marker(sd, n.name));
  int index = 0;
  if (!(f >> index) || index <= 0) return false;
  auto link = hostnet::find_link(n.bridge);
  return link && *link && (*link)->index == index && (*link)->kind == "bridge";
}

img::Result<OpenNetwork> open_network(const StateDir& sd, const std::string& name, int lock_op) {
  RETURN_IF_ERROR(check_name(name, "network"));
  std::string path = network_definition(sd, name);
  auto lock = FileLock::acquire(path, lock_op, false);
  if (!lock) {
    if (lock.error().sys_errno() == ENOENT) {
      return img::make_error(img::ErrorCode::kNotFound,
                             "no network named '" + name + "' in " + sd.root);
    }
    return img::Unexpected(lock.error());
  }
  ASSIGN_OR_RETURN(std::string text, read_locked(*lock, path));
  ASSIGN_OR_RETURN(NetworkDef def, parse_network(text, path));
  if (def.name != name) {
    return img::invalid_argument(path + ": its name is '" + def.name + "', not '" + name + "'");
  }
  return OpenNetwork{std::move(def), std::move(*lock)};
}

img::Status start_network(const StateDir& sd, const NetworkDef& n) {
  ::unlink(network_marker(sd, n.name).c_str());  // whatever an earlier start left
  ASSIGN_OR_RETURN(auto existing, hostnet::find_link(n.bridge));
  if (existing) {
    // libvirt refuses too: a bridge we did not make may carry the host's own traffic.
    return img::invalid_argument("network '" + n.name + "': a link named " + n.bridge +
                                 " already exists (not made by vmm net-start); delete it or "
                                 "give the network another --bridge");
  }
  RETURN_IF_ERROR(hostnet::create_bridge(n.bridge));
  auto undo = [&](img::Error e) {
    (void)hostnet::delete_link(n.bridge);
    return img::Unexpected(e.prepend("network '" + n.name + "'"));
  };
  if (n.subnet) {
    hostnet::Ipv4Cidr a = bridge_address(*n.subnet);
    if (auto s = hostnet::add_ipv4_address(n.bridge, a.addr, a.prefix); !s) return undo(s.error());
  }
  if (auto s = hostnet::set_link_up(n.bridge, true); !s) return undo(s.error());
  auto link = hostnet::find_link(n.bridge);
  if (!link || !*link) return undo(img::Error(img::ErrorCode::kIo, "the new bridge vanished"));
  std::string marker = network_marker(sd, n.name);
  std::ofstream f(marker, std::ios::trunc);
  f << (*link)->index << "\n";
  f.close();
  if (!f) return undo(img::Error(img::ErrorCode::kIo, "cannot write " + marker));
  return {};
}

}  // namespace vmm::lifecycle
