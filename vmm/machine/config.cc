#include "machine/config.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "hostnet/netlink.h"
#include "img/image.h"
#include "virtio/console/console_device.h"
#include "virtio/console/control.h"
#include "x86/mptable.h"

namespace vmm {

img::Result<OnReboot> parse_on_reboot(const std::string& s) {
  if (s == "destroy") return OnReboot::kDestroy;
  if (s == "restart") return OnReboot::kRestart;
  return img::invalid_argument("--on-reboot must be restart or destroy, not '" + s + "'");
}

const char* on_reboot_name(OnReboot r) { return r == OnReboot::kRestart ? "restart" : "destroy"; }

img::Result<uint64_t> parse_size(const std::string& s) {
  size_t i = 0;
  uint64_t v = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
    uint64_t d = static_cast<uint64_t>(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return img::invalid_argument("size '" + s + "' is too large");
    v = v * 10 + d;
    ++i;
  }
  if (i == 0)
    return img::invalid_argument("bad size '" + s + "': expected a number like 512M or 2G");
  std::string unit = s.substr(i);
  for (auto& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (unit.ends_with("IB"))
    unit.resize(unit.size() - 2);
  else if (unit.size() == 2 && unit[1] == 'B')
    unit.resize(1);
  int shift;
  if (unit.empty() || unit == "B")
    shift = 0;
  else if (unit == "K")
    shift = 10;
  else if (unit == "M")
    shift = 20;
  else if (unit == "G")
    shift = 30;
  else if (unit == "T")
    shift = 40;
  else
    return img::invalid_argument("bad size '" + s + "': unknown unit '" + s.substr(i) + "'");
  if (shift && v > (UINT64_MAX >> shift))
    return img::invalid_argument("size '" + s + "' is too large");
  return v << shift;
}

namespace {

// Calls fn(item, key, value) for each comma-separated "key=value" (or bare "key") in opts, empty
// items included, and stops at the first error: the option lists of every device flag.
img::Status for_each_option(
    const std::string& opts,
    const std::function<img::Status(const std::string&, const std::string&, std::string)>& fn) {
  size_t pos = 0;
  while (pos <= opts.size()) {
    size_t next = opts.find(',', pos);
    std::string kv = opts.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    pos = next == std::string::npos ? opts.size() + 1 : next + 1;
    size_t eq = kv.find('=');
    RETURN_IF_ERROR(fn(kv, kv.substr(0, eq), eq == std::string::npos ? "" : kv.substr(eq + 1)));
  }
  return {};
}

}  // namespace

img::Result<DiskSpec> parse_disk_spec(const std::string& s) {
  DiskSpec d;
  size_t pos = s.find(',');
  d.path = s.substr(0, pos);
  if (d.path.empty()) return img::invalid_argument("--disk needs a path: '" + s + "'");
  if (pos == std::string::npos) return d;
  RETURN_IF_ERROR(for_each_option(
      s.substr(pos + 1),
      [&](const std::string& kv, const std::string& k, std::string v) -> img::Status {
        if (k == "format") {
          if (v != "raw" && v != "qcow2")
            return img::invalid_argument("--disk format must be raw or qcow2, not '" + v + "'");
          d.format = v;
        } else if (k == "readonly") {
          if (v == "on" || v == "true" || v.empty())
            d.read_only = true;
          else if (v == "off" || v == "false")
            d.read_only = false;
          else
            return img::invalid_argument("--disk readonly must be on or off, not '" + v + "'");
        } else if (k == "cache") {
          if (v == "none")
            d.direct = true;
          else if (v == "writeback")
            d.direct = false;
          else
            return img::invalid_argument("--disk cache must be none or writeback, not '" + v + "'");
        } else {
          return img::invalid_argument("--disk: unknown option '" + kv +
                                       "' (format=, readonly=, cache=)");
        }
        return {};
      }));
  return d;
}

img::Result<ScsiSpec> parse_scsi_spec(const std::string& s) {
  ScsiSpec d;
  size_t pos = s.find(',');
  d.path = s.substr(0, pos);
  if (d.path.empty()) return img::invalid_argument("--scsi needs a path: '" + s + "'");
  if (pos == std::string::npos) return d;
  RETURN_IF_ERROR(for_each_option(
      s.substr(pos + 1),
      [&](const std::string& kv, const std::string& k, std::string v) -> img::Status {
        if (k == "format") {
          if (v != "raw" && v != "qcow2") {
            return img::invalid_argument("--scsi format must be raw or qcow2, not '" + v + "'");
          }
          d.format = v;
        } else if (k == "readonly") {
          if (v == "on" || v == "true" || v.empty())
            d.read_only = true;
          else if (v == "off" || v == "false")
            d.read_only = false;
          else
            return img::invalid_argument("--scsi readonly must be on or off, not '" + v + "'");
        } else if (k == "cache") {
          if (v == "none")
            d.direct = true;
          else if (v == "writeback")
            d.direct = false;
          else if (v == "writethrough")
            d.write_cache = false;
          else {
            return img::invalid_argument(
                "--scsi cache must be none, writeback or writethrough, not '" + v + "'");
          }
        } else {
          return img::invalid_argument("--scsi: unknown option '" + kv +
                                       "' (format=, cache=, readonly)");
        }
        return {};
      }));
  return d;
}

img::Result<RngSpec> parse_rng_spec(const std::string& s) {
  RngSpec r;
  if (s.empty() || s == "on") return r;
  RETURN_IF_ERROR(for_each_option(
      s, [&](const std::string& kv, const std::string& k, std::string v) -> img::Status {
        if (k == "rate") {
          if (v.ends_with("/s")) v.resize(v.size() - 2);
          auto n = parse_size(v);
          if (!n) return img::invalid_argument("--rng rate: " + n.error().message());
          if (*n == 0)
            return img::invalid_argument("--rng rate must be above 0 (leave it out for no limit)");
          r.rate = *n;
        } else if (k == "max-request") {
          auto n = parse_size(v);
          if (!n) return img::invalid_argument("--rng max-request: " + n.error().message());
          if (*n == 0 || *n > (1u << 20)) {
            return img::invalid_argument("--rng max-request must be 1 to 1M bytes");
          }
          r.max_request = static_cast<uint32_t>(*n);
        } else {
          return img::invalid_argument("--rng: unknown option '" + kv +
                                       "' (rate=BYTES/s, max-request=BYTES)");
        }
        return {};
      }));
  return r;
}

img::Result<ConsoleSpec> parse_console_spec(const std::string& s) {
  ConsoleSpec c;
  if (s == "stdio") return c;
  if (s.starts_with("file=") && s.size() > 5) {
    c.kind = ConsoleSpec::Kind::kFile;
    c.path = s.substr(5);
    return c;
  }
  if (s.starts_with("socket=") && s.size() > 7) {
    c.kind = ConsoleSpec::Kind::kSocket;
    c.path = s.substr(7);
    return c;
  }
  return img::invalid_argument("--console must be stdio, file=PATH or socket=PATH, not '" + s +
                               "'");
}

img::Result<SerialPortSpec> parse_serial_port_spec(const std::string& s) {
  SerialPortSpec p;
  bool have_path = false;
  RETURN_IF_ERROR(for_each_option(
      s, [&](const std::string& kv, const std::string& k, std::string v) -> img::Status {
        if (k == "name") {
          p.name = v;
        } else if ((k == "path" || k == "file") && !v.empty()) {
          if (have_path) return img::invalid_argument("--serial-port: give path= or file=, once");
          have_path = true;
          p.file = k == "file";
          p.path = v;
        } else {
          return img::invalid_argument("--serial-port: unknown option '" + kv +
                                       "' (name=NAME, path=SOCKET or file=PATH)");
        }
        return {};
      }));
  if (std::string why = virtio::console::check_port_name(p.name); !why.empty()) {
    return img::invalid_argument("--serial-port: " + why);
  }
  if (!have_path) {
    return img::invalid_argument("--serial-port " + p.name +
                                 ": needs path=SOCKET (a listening unix socket) or file=PATH");
  }
  return p;
}

namespace {

img::Result<std::array<uint8_t, 6>> parse_mac(const std::string& v) {
  std::array<uint8_t, 6> m{};
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  };
  bool ok = v.size() == 17;
  for (size_t i = 0; ok && i < 6; ++i) {
    int hi = hex(v[3 * i]), lo = hex(v[3 * i + 1]);
    ok = hi >= 0 && lo >= 0 && (i == 5 || v[3 * i + 2] == ':');
    m[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  if (!ok) return img::invalid_argument("--net mac '" + v + "' must look like 02:00:00:00:00:01");
  // IEEE 802: bit 0 of the first byte marks a group address, which no NIC may own.
  if (m[0] & 1) return img::invalid_argument("--net mac " + v + " is a multicast address");
  return m;
}

}  // namespace

img::Result<NetSpec> parse_net_spec(const std::string& s) {
  NetSpec n;
  size_t comma = s.find(',');
  std::string backend = s.substr(0, comma);
  if (backend == "tap") {
    // create one
  } else if (backend.starts_with("tap=") && backend.size() > 4) {
    n.tap = backend.substr(4);
    if (n.tap.size() > 15) {
      return img::invalid_argument("--net tap name '" + n.tap + "' is longer than 15 characters");
    }
  } else if (backend.starts_with("bridge=") && backend.size() > 7) {
    n.bridge = backend.substr(7);
    RETURN_IF_ERROR(hostnet::check_link_name(n.bridge, "--net bridge"));
  } else if (backend.starts_with("network=") && backend.size() > 8) {
    n.network = backend.substr(8);
    // A network's name names its file in the state directory, as a VM's does.
    if (n.network.size() > 64 || n.network[0] == '.' || n.network[0] == '-' ||
        n.network.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                    "0123456789_.+-") != std::string::npos) {
      return img::invalid_argument("--net network name '" + n.network +
                                   "' must be 1 to 64 of A-Z a-z 0-9 _ . + -, not starting "
                                   "with '.' or '-'");
    }
  } else {
    return img::invalid_argument(
        "--net must be tap, tap=NAME, bridge=BR or network=NAME, then "
        "[,mac=XX:XX:XX:XX:XX:XX]; not '" +
        s + "'");
  }
  if (comma == std::string::npos) return n;
  RETURN_IF_ERROR(for_each_option(
      s.substr(comma + 1),
      [&](const std::string& kv, const std::string&, std::string) -> img::Status {
        if (kv.starts_with("mac=")) {
          ASSIGN_OR_RETURN(auto m, parse_mac(kv.substr(4)));
          n.mac = m;
          return {};
        }
        return img::invalid_argument("--net: unknown option '" + kv + "' (mac=XX:XX:XX:XX:XX:XX)");
      }));
  return n;
}

std::string net_spec_text(const NetSpec& n) {
  std::string v = !n.bridge.empty()    ? "bridge=" + n.bridge
                  : !n.network.empty() ? "network=" + n.network
                  : !n.tap.empty()     ? "tap=" + n.tap
                                       : "tap";
  if (n.mac) {
    char b[18];
    const auto& m = *n.mac;
    std::snprintf(b, sizeof b, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
    v += std::string(",mac=") + b;
  }
  return v;
}

img::Result<BalloonSpec> parse_balloon_spec(const std::string& s) {
  BalloonSpec b;
  if (s.empty() || s == "on") return b;
  RETURN_IF_ERROR(for_each_option(
      s, [&](const std::string& kv, const std::string& k, std::string v) -> img::Status {
        if (k == "target") {
          auto n = parse_size(v);
          if (!n) return img::invalid_argument("--balloon target: " + n.error().message());
          if (*n % 4096 != 0)
            return img::invalid_argument("--balloon target must be a multiple of 4K");
          b.target = *n;
        } else if (k == "stats") {
          char* end = nullptr;
          unsigned long n = std::strtoul(v.c_str(), &end, 10);
          if (v.empty() || *end != 0 || n > 3600) {
            return img::invalid_argument("--balloon stats must be 0 to 3600 seconds, not '" + v +
                                         "'");
          }
          b.stats_seconds = static_cast<uint32_t>(n);
        } else {
          return img::invalid_argument("--balloon: unknown option '" + kv +
                                       "' (target=SIZE, stats=SECONDS)");
        }
        return {};
      }));
  return b;
}

namespace {

// An image named twice (--disk or --scsi, under any name of the same file) is refused unless
// every use is read-only: the second read-write open would fail on the first one's image lock
// (docs/img.md, "Locking") with qemu's "Is another process using the image?", which would send
// the user looking for a process that is not there.
img::Status check_images_given_once(const MachineConfig& c) {
  struct Use {
    std::string flag, path, id;
    bool read_only;
  };
  std::vector<Use> uses;
  for (const DiskSpec& d : c.disks) uses.push_back({"--disk", d.path, "", d.read_only});
  for (const ScsiSpec& d : c.scsi) uses.push_back({"--scsi", d.path, "", d.read_only});
  for (size_t i = 0; i < uses.size(); ++i) {
    uses[i].id = img::host_file_opener().identity(uses[i].path);
    for (size_t j = 0; j < i; ++j) {
      if (uses[j].id != uses[i].id || (uses[i].read_only && uses[j].read_only)) continue;
      return img::invalid_argument(uses[i].flag + " " + uses[i].path + ": the same image as " +
                                   uses[j].flag + " " + uses[j].path +
                                   "; an image can back two disks only if both are readonly=on");
    }
  }
  return {};
}

}  // namespace

img::Status validate(const MachineConfig& c) {
  constexpr uint64_t kMin = 16ull << 20;
  constexpr uint64_t kMax = 1ull << 40;
  if (c.memory < kMin || c.memory > kMax) {
    return img::invalid_argument(img::strfmt("--memory must be between 16M and 1T, got %llu bytes",
                                             (unsigned long long)c.memory));
  }
  if (c.memory % (2ull << 20) != 0)
    return img::invalid_argument("--memory must be a multiple of 2M");
  if (c.cpus == 0 || c.cpus > kMaxCpus) {
    return img::invalid_argument(img::strfmt("--cpus must be 1..%u", kMaxCpus));
  }
  if (c.kernel.empty()) return img::invalid_argument("--kernel is required");
  if (c.scsi.size() > 256) return img::invalid_argument("--scsi: at most 256 LUNs");
  if (c.seccomp != "off" && c.seccomp != "log" && c.seccomp != "on") {
    return img::invalid_argument("--seccomp must be off, log or on, not '" + c.seccomp + "'");
  }
  if (c.user.empty() && !c.group.empty()) return img::invalid_argument("--group needs --user");
  if (c.balloon && c.balloon->target && *c.balloon->target > c.memory) {
    return img::invalid_argument("--balloon target is larger than --memory");
  }
  if (c.serial_ports.size() > virtio::console::kMaxNamedPorts) {
    return img::invalid_argument(img::strfmt("--serial-port: at most %zu ports",
                                             virtio::console::kMaxNamedPorts));
  }
  for (size_t i = 0; i < c.serial_ports.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (c.serial_ports[i].name == c.serial_ports[j].name) {
        return img::invalid_argument("--serial-port name " + c.serial_ports[i].name +
                                     " is given twice");
      }
    }
  }
  return check_images_given_once(c);
}

}  // namespace vmm
