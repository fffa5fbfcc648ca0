// A defined VM: its name, UUID and everything `vmm run` accepts, kept in the state directory as
// one JSON file (format "vmm-domain", version 1; every member is documented in
// docs/vmm-lifecycle.md). The parser is strict: unknown members, wrong types and missing required
// members are errors that name the member, so a typo in a hand-written file is caught at define
// time, not at boot.
//
// JSON by nlohmann-json3 (Debian's nlohmann-json3-dev), as the control socket uses; its exceptions
// stay inside definition.cc.
//
// Thread-safety: plain values and pure functions (new_uuid reads getrandom).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "img/status.h"
#include "machine/config.h"

namespace vmm::lifecycle {

inline constexpr int kDefinitionVersion = 1;
inline constexpr const char* kDefinitionFormat = "vmm-domain";

struct Definition {
  std::string name;
  std::string uuid;      // RFC 4122 text form, lower case
  MachineConfig config;  // serial and control are not part of a definition (vmm start owns them)
};

// A VM name: 1 to 64 of [A-Za-z0-9_.+-], not starting with '.' or '-' (it names files).
// `what` names the thing in errors ("VM", "network").
img::Status check_name(const std::string& name, const char* what = "VM");
// A random (version 4) UUID.
std::string new_uuid();
// A random locally administered unicast MAC (IEEE 802: bit 1 set, bit 0 clear in byte 0).
std::array<uint8_t, 6> new_mac();
// "source" names the file in errors ("demo.json: ...").
img::Result<Definition> parse_definition(const std::string& text, const std::string& source);
// Pretty-printed JSON with a trailing newline; parse_definition(to_json(d)) == d.
std::string to_json(const Definition& d);
// The arguments after `vmm run` that boot d (without --serial and --control).
img::Result<std::vector<std::string>> run_args(const Definition& d);
// "vda", "vdb", ... for virtio-blk disk i; "sda", ... for scsi LUN i (virsh's targets).
std::string disk_target(bool scsi, size_t i);

}  // namespace vmm::lifecycle
