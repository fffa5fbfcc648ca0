// Networks of the state directory (`vmm net-define/net-start/...`, virsh's net-* commands): a
// named Linux bridge that the taps of the VMs on the network join. NAT and DHCP are not ours:
// a subnet, when given, only puts an address on the bridge, so the host reaches the guests.
//
//   DIR/networks/NAME.json     the definition (format "vmm-network", version 1; members in
//                              docs/vmm-lifecycle.md); flock()ed by every net-* command on it
//   DIR/networks/NAME.active   written by net-start: the bridge's ifindex. The network is
//                              active while that file names the bridge that exists now, so a
//                              bridge deleted behind our back (or a host reboot) reads as
//                              inactive and the next net-start cleans up
//
// Thread-safety: plain values and functions on the file system and the host's links.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "hostnet/netlink.h"
#include "img/status.h"
#include "lifecycle/state_dir.h"

namespace vmm::lifecycle {

inline constexpr int kNetworkVersion = 1;
inline constexpr const char* kNetworkFormat = "vmm-network";

struct NetworkDef {
  std::string name;
  std::string uuid;
  std::string bridge;
  std::optional<hostnet::Ipv4Cidr> subnet;  // as given; the bridge's address is bridge_address()
  bool autostart = false;
};

img::Result<NetworkDef> parse_network(const std::string& text, const std::string& source);
std::string to_json(const NetworkDef& n);

// The address the bridge takes: the subnet's as given, or its first host address when the
// subnet was given as the network itself (10.0.0.0/24 -> 10.0.0.1/24).
hostnet::Ipv4Cidr bridge_address(const hostnet::Ipv4Cidr& subnet);

std::string network_dir(const StateDir& sd);
std::string network_definition(const StateDir& sd, const std::string& name);
std::string network_marker(const StateDir& sd, const std::string& name);
// The names of the defined networks, sorted.
std::vector<std::string> network_names(const StateDir& sd);
// Whether the network's bridge is up under our marker (see above).
bool network_active(const StateDir& sd, const NetworkDef& n);

// A defined network, its definition locked (LOCK_EX or LOCK_SH) while the command runs.
struct OpenNetwork {
  NetworkDef def;
  FileLock lock;
};
img::Result<OpenNetwork> open_network(const StateDir& sd, const std::string& name, int lock_op);

// Makes the bridge, gives it the subnet's address, sets it up and writes the marker; on any
// failure the bridge is deleted again. The caller holds the definition lock.
img::Status start_network(const StateDir& sd, const NetworkDef& n);

}  // namespace vmm::lifecycle
