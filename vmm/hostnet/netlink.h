// Host network links over rtnetlink (NETLINK_ROUTE, rtnetlink(7)): the few operations `vmm`
// needs to wire a VM into a bridge, as iproute2's `ip link` does them, without running it:
// make and delete a bridge, set a link up, enslave a tap to a bridge, give a link an IPv4
// address, and look a link up by name. Everything acts on the caller's network namespace.
//
// Each call opens its own netlink socket, sends one request with NLM_F_ACK and reads the
// kernel's answer, so a failure comes back as the kernel's errno with the operation named
// ("bridge vmmbr0: cannot create: Operation not permitted").
//
// Thread-safety: free functions, no shared state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "img/status.h"

namespace vmm::hostnet {

struct LinkInfo {
  int index = 0;
  std::string kind;  // IFLA_INFO_KIND: "bridge", "tun", "veth"; "" for a plain device
  int master = 0;    // the index of the bridge it is a port of; 0 for none
  bool up = false;   // IFF_UP
};

// A link's name must be 1 to 15 bytes (IFNAMSIZ - 1) with no '/', ':' or whitespace, as the
// kernel's dev_valid_name() wants.
img::Status check_link_name(const std::string& name, const std::string& what);

// The link named `name`, or nullopt when there is none.
img::Result<std::optional<LinkInfo>> find_link(const std::string& name);
// The name of the link with this index, or "" when there is none.
std::string link_name(int index);
img::Status create_bridge(const std::string& name);
img::Status delete_link(const std::string& name);
img::Status set_link_up(const std::string& name, bool up);
// Makes `link` a port of `bridge` (IFLA_MASTER), as `ip link set LINK master BRIDGE`.
img::Status set_master(const std::string& link, const std::string& bridge);
// Adds ADDR/PREFIX (host order) to the link, as `ip addr add`.
img::Status add_ipv4_address(const std::string& link, uint32_t addr, int prefix);

// "192.168.100.1/24" -> address and prefix; a clear error for anything else.
struct Ipv4Cidr {
  uint32_t addr = 0;  // host order
  int prefix = 0;
};
img::Result<Ipv4Cidr> parse_ipv4_cidr(const std::string& text);
std::string format_ipv4_cidr(const Ipv4Cidr& c);

}  // namespace vmm::hostnet
