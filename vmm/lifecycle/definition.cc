#include "lifecycle/definition.h"

#include <sys/random.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

namespace vmm::lifecycle {
namespace {

using Json = nlohmann::json;

std::string mac_text(const std::array<uint8_t, 6>& m) {
  char b[18];
  std::snprintf(b, sizeof b, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return b;
}

// Reads one member of an object with its type checked; `where` names the object in errors.
class Reader {
 public:
  Reader(const Json& j, std::string where, std::string source)
      : j_(j), where_(std::move(where)), source_(std::move(source)) {}

  img::Status check_members(const std::set<std::string>& known) const {
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      if (!known.contains(it.key())) return fail("unknown member '" + it.key() + "'");
    }
    return {};
  }
  bool has(const char* k) const { return j_.contains(k) && !j_.at(k).is_null(); }
  img::Result<std::string> str(const char* k, bool required, std::string dflt = "") const {
    if (!has(k)) {
      if (required) return missing(k);
      return dflt;
    }
    if (!j_.at(k).is_string()) return fail("'" + std::string(k) + "' must be a string");
    return j_.at(k).get<std::string>();
  }
  img::Result<uint64_t> num(const char* k, bool required, uint64_t dflt = 0) const {
    if (!has(k)) {
      if (required) return missing(k);
      return dflt;
    }
    if (!j_.at(k).is_number_unsigned()) {
      return fail("'" + std::string(k) + "' must be a non-negative integer");
    }
    return j_.at(k).get<uint64_t>();
  }
  img::Result<bool> boolean(const char* k, bool dflt) const {
    if (!has(k)) return dflt;
    if (!j_.at(k).is_boolean()) return fail("'" + std::string(k) + "' must be true or false");
    return j_.at(k).get<bool>();
  }
  img::Result<const Json*> obj(const char* k) const {
    if (!has(k)) return nullptr;
    if (!j_.at(k).is_object()) return fail("'" + std::string(k) + "' must be an object");
    return &j_.at(k);
  }
  img::Result<const Json*> arr(const char* k) const {
    if (!has(k)) return nullptr;
    if (!j_.at(k).is_array()) return fail("'" + std::string(k) + "' must be an array");
    return &j_.at(k);
  }
  img::Unexpected fail(const std::string& msg) const {
    return img::invalid_argument(source_ + ": " + where_ + msg);
  }

 private:
  img::Unexpected missing(const char* k) const {
    return fail("missing member '" + std::string(k) + "'");
  }
  const Json& j_;
  std::string where_, source_;
};

img::Status check_path(const std::string& what, const std::string& p) {
  if (p.empty()) return img::invalid_argument(what + " is empty");
  // vmm run's --disk/--scsi options are comma-separated: a comma in a path cannot be passed on.
  if (what != "kernel" && what != "initrd" && p.find(',') != std::string::npos) {
    return img::invalid_argument(what + " '" + p +
                                 "' contains a comma, which vmm run's device options cannot carry");
  }
  return {};
}

img::Result<Definition> parse(const Json& j, const std::string& src) {
  if (!j.is_object()) return img::invalid_argument(src + ": not a JSON object");
  Reader r(j, "", src);
  ASSIGN_OR_RETURN(std::string format, r.str("format", true));
  if (format != kDefinitionFormat) {
    return r.fail("'format' is '" + format + "', not '" + kDefinitionFormat + "'");
  }
  if (!j.contains("version") || !j.at("version").is_number_integer()) {
    return r.fail("missing member 'version' (an integer)");
  }
  if (j.at("version").get<int64_t>() != kDefinitionVersion) {
    return r.fail("unknown version " + j.at("version").dump() + " (this vmm reads version " +
                  std::to_string(kDefinitionVersion) + ")");
  }
  RETURN_IF_ERROR(r.check_members(
      {"format",          "version",      "name",    "uuid",    "vcpus",     "memory",
       "kernel",          "initrd",       "cmdline", "disks",   "scsi",      "nics",
       "console",         "serial_ports", "rng",     "balloon", "hugepages", "mem_prealloc",
       "pvm_workarounds", "seccomp",      "user",    "group",   "on_reboot"}));
  Definition d;
  MachineConfig& c = d.config;
  ASSIGN_OR_RETURN(d.name, r.str("name", true));
  if (auto s = check_name(d.name); !s) return r.fail(s.error().message());
  ASSIGN_OR_RETURN(d.uuid, r.str("uuid", true));
  ASSIGN_OR_RETURN(uint64_t vcpus, r.num("vcpus", true));
  if (vcpus > 1024) return r.fail("'vcpus' is out of range");
  c.cpus = static_cast<uint32_t>(vcpus);
  ASSIGN_OR_RETURN(c.memory, r.num("memory", true));
  ASSIGN_OR_RETURN(c.kernel, r.str("kernel", true));
  ASSIGN_OR_RETURN(c.initrd, r.str("initrd", false));
  ASSIGN_OR_RETURN(c.cmdline, r.str("cmdline", false));
  ASSIGN_OR_RETURN(c.hugepages, r.boolean("hugepages", false));
  ASSIGN_OR_RETURN(c.mem_prealloc, r.boolean("mem_prealloc", false));
  ASSIGN_OR_RETURN(c.pvm_workarounds, r.boolean("pvm_workarounds", true));
  ASSIGN_OR_RETURN(std::string seccomp, r.str("seccomp", false));
  if (!seccomp.empty()) c.seccomp = seccomp;
  ASSIGN_OR_RETURN(c.user, r.str("user", false));
  ASSIGN_OR_RETURN(std::string on_reboot, r.str("on_reboot", false));
  c.on_reboot = OnReboot::kRestart;  // libvirt's default, and a definition's before the member
  if (!on_reboot.empty()) {
    auto o = parse_on_reboot(on_reboot);
    if (!o) return r.fail("'on_reboot' must be \"restart\" or \"destroy\"");
    c.on_reboot = *o;
  }
  ASSIGN_OR_RETURN(c.group, r.str("group", false));

  for (const char* key : {"disks", "scsi"}) {
    bool scsi = key[0] == 's';
    ASSIGN_OR_RETURN(const Json* list, r.arr(key));
    for (size_t i = 0; list && i < list->size(); ++i) {
      const Json& e = (*list)[i];
      std::string where = std::string(key) + "[" + std::to_string(i) + "]: ";
      if (!e.is_object()) return r.fail(where + "must be an object");
      Reader dr(e, where, src);
      RETURN_IF_ERROR(dr.check_members({"path", "format", "cache", "readonly"}));
      ASSIGN_OR_RETURN(std::string path, dr.str("path", true));
      ASSIGN_OR_RETURN(std::string fmt, dr.str("format", false));
      ASSIGN_OR_RETURN(std::string cache, dr.str("cache", false, "writeback"));
      ASSIGN_OR_RETURN(bool ro, dr.boolean("readonly", false));
      if (fmt != "" && fmt != "raw" && fmt != "qcow2") {
        return dr.fail("'format' must be raw or qcow2, not '" + fmt + "'");
      }
      bool wt = scsi && cache == "writethrough";
      if (cache != "none" && cache != "writeback" && !wt) {
        return dr.fail(std::string("'cache' must be none") +
                       (scsi ? ", writeback or writethrough" : " or writeback") + ", not '" +
                       cache + "'");
      }
      if (auto s = check_path("disk path", path); !s) return dr.fail(s.error().message());
      if (scsi) {
        c.scsi.push_back({path, fmt, ro, cache == "none", !wt});
      } else {
        c.disks.push_back({path, fmt, ro, cache == "none"});
      }
    }
  }
  ASSIGN_OR_RETURN(const Json* nics, r.arr("nics"));
  for (size_t i = 0; nics && i < nics->size(); ++i) {
    const Json& e = (*nics)[i];
    std::string where = "nics[" + std::to_string(i) + "]: ";
    if (!e.is_object()) return r.fail(where + "must be an object");
    Reader nr(e, where, src);
    RETURN_IF_ERROR(nr.check_members({"tap", "bridge", "network", "mac"}));
    ASSIGN_OR_RETURN(std::string tap, nr.str("tap", false));
    ASSIGN_OR_RETURN(std::string bridge, nr.str("bridge", false));
    ASSIGN_OR_RETURN(std::string network, nr.str("network", false));
    ASSIGN_OR_RETURN(std::string mac, nr.str("mac", false));
    if (!tap.empty() + !bridge.empty() + !network.empty() > 1) {
      return nr.fail("give at most one of 'tap', 'bridge' and 'network'");
    }
    std::string backend = !bridge.empty()    ? "bridge=" + bridge
                          : !network.empty() ? "network=" + network
                          : !tap.empty()     ? "tap=" + tap
                                             : "tap";
    // The same checks as --net (name length, MAC syntax, unicast).
    auto n = parse_net_spec(backend + (mac.empty() ? "" : ",mac=" + mac));
    if (!n) return nr.fail(n.error().message());
    c.nets.push_back(*n);
  }
  ASSIGN_OR_RETURN(const Json* con, r.obj("console"));
  if (con) {
    Reader cr(*con, "console: ", src);
    RETURN_IF_ERROR(cr.check_members({"file", "socket"}));
    ASSIGN_OR_RETURN(std::string file, cr.str("file", false));
    ASSIGN_OR_RETURN(std::string sock, cr.str("socket", false));
    if (file.empty() == sock.empty()) return cr.fail("give exactly one of 'file' and 'socket'");
    c.console = ConsoleSpec{file.empty() ? ConsoleSpec::Kind::kSocket : ConsoleSpec::Kind::kFile,
                            file.empty() ? sock : file};
  }
  ASSIGN_OR_RETURN(const Json* ports, r.arr("serial_ports"));
  for (size_t i = 0; ports && i < ports->size(); ++i) {
    const Json& e = (*ports)[i];
    std::string where = "serial_ports[" + std::to_string(i) + "]: ";
    if (!e.is_object()) return r.fail(where + "must be an object");
    Reader pr(e, where, src);
    RETURN_IF_ERROR(pr.check_members({"name", "file", "socket"}));
    ASSIGN_OR_RETURN(std::string name, pr.str("name", true));
    ASSIGN_OR_RETURN(std::string file, pr.str("file", false));
    ASSIGN_OR_RETURN(std::string sock, pr.str("socket", false));
    if (file.empty() == sock.empty()) return pr.fail("give exactly one of 'file' and 'socket'");
    // The same checks as --serial-port (name syntax), on a path --serial-port can carry.
    if (auto st = check_path("serial port path", file.empty() ? sock : file); !st) {
      return pr.fail(st.error().message());
    }
    auto sp =
        parse_serial_port_spec("name=" + name + (file.empty() ? ",path=" + sock : ",file=" + file));
    if (!sp) return pr.fail(sp.error().message());
    c.serial_ports.push_back(*sp);
  }
  ASSIGN_OR_RETURN(const Json* rng, r.obj("rng"));
  if (rng) {
    Reader rr(*rng, "rng: ", src);
    RETURN_IF_ERROR(rr.check_members({"rate", "max_request"}));
    RngSpec s;
    ASSIGN_OR_RETURN(s.rate, rr.num("rate", false, 0));
    ASSIGN_OR_RETURN(uint64_t mr, rr.num("max_request", false, s.max_request));
    if (mr == 0 || mr > (1u << 20)) return rr.fail("'max_request' must be 1 to 1048576");
    s.max_request = static_cast<uint32_t>(mr);
    c.rng = s;
  }
  ASSIGN_OR_RETURN(const Json* bal, r.obj("balloon"));
  if (bal) {
    Reader br(*bal, "balloon: ", src);
    RETURN_IF_ERROR(br.check_members({"target", "stats"}));
    BalloonSpec s;
    if (br.has("target")) {
      ASSIGN_OR_RETURN(uint64_t t, br.num("target", true));
      if (t % 4096 != 0) return br.fail("'target' must be a multiple of 4096");
      s.target = t;
    }
    ASSIGN_OR_RETURN(uint64_t st, br.num("stats", false, 0));
    if (st > 3600) return br.fail("'stats' must be 0 to 3600 seconds");
    s.stats_seconds = static_cast<uint32_t>(st);
    c.balloon = s;
  }
  if (auto s = validate(c); !s) return r.fail(s.error().message());
  return d;
}

}  // namespace

img::Status check_name(const std::string& n, const char* what) {
  std::string w = what;
  if (n.empty() || n.size() > 64)
    return img::invalid_argument("a " + w + " name has 1 to 64 characters");
  if (n[0] == '.' || n[0] == '-') {
    return img::invalid_argument(w + " name '" + n + "' may not start with '.' or '-'");
  }
  for (char ch : n) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '.' && ch != '-' &&
        ch != '+') {
      return img::invalid_argument(w + " name '" + n + "' may hold only letters, digits and _.+-");
    }
  }
  return {};
}

std::array<uint8_t, 6> new_mac() {
  std::string u = new_uuid();
  std::array<uint8_t, 6> m{};
  for (size_t i = 0; i < 6; ++i)
    m[i] = static_cast<uint8_t>(std::stoi(u.substr(24 + 2 * i, 2), nullptr, 16));
  m[0] = static_cast<uint8_t>((m[0] & 0xfc) | 0x02);
  return m;
}

std::string new_uuid() {
  uint8_t b[16] = {};
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t n = ::getrandom(b + got, sizeof b - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);  // RFC 4122 §4.4: version 4
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);  // variant 10
  char s[37];
  std::snprintf(s, sizeof s, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
                b[13], b[14], b[15]);
  return s;
}

img::Result<Definition> parse_definition(const std::string& text, const std::string& source) {
  Json j;
  try {
    j = Json::parse(text);
  } catch (const Json::exception& e) {
    return img::invalid_argument(source + ": not valid JSON: " + e.what());
  }
  return parse(j, source);
}

std::string to_json(const Definition& d) {
  const MachineConfig& c = d.config;
  Json j = {{"format", kDefinitionFormat},
            {"version", kDefinitionVersion},
            {"name", d.name},
            {"uuid", d.uuid},
            {"vcpus", c.cpus},
            {"memory", c.memory},
            {"kernel", c.kernel},
            {"initrd", c.initrd},
            {"cmdline", c.cmdline},
            {"hugepages", c.hugepages},
            {"mem_prealloc", c.mem_prealloc},
            {"pvm_workarounds", c.pvm_workarounds},
            {"seccomp", c.seccomp},
            {"on_reboot", on_reboot_name(c.on_reboot)}};
  if (!c.user.empty()) j["user"] = c.user;
  if (!c.group.empty()) j["group"] = c.group;
  j["disks"] = Json::array();
  for (const DiskSpec& s : c.disks) {
    j["disks"].push_back({{"path", s.path},
                          {"format", s.format},
                          {"cache", s.direct ? "none" : "writeback"},
                          {"readonly", s.read_only}});
  }
  j["scsi"] = Json::array();
  for (const ScsiSpec& s : c.scsi) {
    j["scsi"].push_back(
        {{"path", s.path},
         {"format", s.format},
         {"cache", s.direct ? "none" : (s.write_cache ? "writeback" : "writethrough")},
         {"readonly", s.read_only}});
  }
  j["nics"] = Json::array();
  for (const NetSpec& n : c.nets) {
    Json e = !n.bridge.empty()    ? Json{{"bridge", n.bridge}}
             : !n.network.empty() ? Json{{"network", n.network}}
                                  : Json{{"tap", n.tap}};
    if (n.mac) e["mac"] = mac_text(*n.mac);
    j["nics"].push_back(e);
  }
  j["console"] = nullptr;
  if (c.console) {
    j["console"] = {
        {c.console->kind == ConsoleSpec::Kind::kFile ? "file" : "socket", c.console->path}};
  }
  j["serial_ports"] = Json::array();
  for (const SerialPortSpec& sp : c.serial_ports) {
    j["serial_ports"].push_back({{"name", sp.name}, {sp.file ? "file" : "socket", sp.path}});
  }
  j["rng"] = nullptr;
  if (c.rng) j["rng"] = {{"rate", c.rng->rate}, {"max_request", c.rng->max_request}};
  j["balloon"] = nullptr;
  if (c.balloon) {
    j["balloon"] = {{"target", nullptr}, {"stats", c.balloon->stats_seconds}};
    if (c.balloon->target) j["balloon"]["target"] = *c.balloon->target;
  }
  // Replacement of invalid UTF-8 (a path from argv) rather than an exception.
  return j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

img::Result<std::vector<std::string>> run_args(const Definition& d) {
  const MachineConfig& c = d.config;
  std::vector<std::string> a = {
      "--kernel", c.kernel, "--memory", std::to_string(c.memory), "--cpus", std::to_string(c.cpus)};
  if (!c.initrd.empty()) a.insert(a.end(), {"--initrd", c.initrd});
  if (!c.cmdline.empty()) a.insert(a.end(), {"--cmdline", c.cmdline});
  for (const DiskSpec& s : c.disks) {
    RETURN_IF_ERROR(check_path("disk path", s.path));
    std::string v = s.path;
    if (!s.format.empty()) v += ",format=" + s.format;
    if (s.read_only) v += ",readonly=on";
    if (s.direct) v += ",cache=none";
    a.insert(a.end(), {"--disk", v});
  }
  for (const ScsiSpec& s : c.scsi) {
    RETURN_IF_ERROR(check_path("scsi path", s.path));
    std::string v = s.path;
    if (!s.format.empty()) v += ",format=" + s.format;
    if (s.read_only) v += ",readonly=on";
    if (s.direct) v += ",cache=none";
    if (!s.write_cache) v += ",cache=writethrough";
    a.insert(a.end(), {"--scsi", v});
  }
  for (const NetSpec& n : c.nets) {
    a.insert(a.end(), {"--net", net_spec_text(n)});
  }
  if (c.console) {
    a.push_back("--console");
    a.push_back((c.console->kind == ConsoleSpec::Kind::kFile ? "file=" : "socket=") +
                c.console->path);
  }
  for (const SerialPortSpec& sp : c.serial_ports) {
    RETURN_IF_ERROR(check_path("serial port path", sp.path));
    a.insert(a.end(),
             {"--serial-port", "name=" + sp.name + (sp.file ? ",file=" : ",path=") + sp.path});
  }
  if (c.rng) {
    std::string v = "max-request=" + std::to_string(c.rng->max_request);
    if (c.rng->rate) v = "rate=" + std::to_string(c.rng->rate) + "," + v;
    a.insert(a.end(), {"--rng", v});
  }
  if (c.balloon) {
    std::string v = "stats=" + std::to_string(c.balloon->stats_seconds);
    if (c.balloon->target) v = "target=" + std::to_string(*c.balloon->target) + "," + v;
    a.insert(a.end(), {"--balloon", v});
  }
  if (c.hugepages) a.push_back("--hugepages");
  if (c.mem_prealloc) a.push_back("--mem-prealloc");
  if (!c.pvm_workarounds) a.push_back("--no-pvm-workarounds");
  a.insert(a.end(), {"--seccomp", c.seccomp, "--on-reboot", on_reboot_name(c.on_reboot)});
  if (!c.user.empty()) a.insert(a.end(), {"--user", c.user});
  if (!c.group.empty()) a.insert(a.end(), {"--group", c.group});
  return a;
}

std::string disk_target(bool scsi, size_t i) {
  // virsh's naming: vda..vdz, vdaa.. (as Linux names its disks).
  std::string suffix;
  size_t n = i;
  do {
    suffix.insert(suffix.begin(), static_cast<char>('a' + n % 26));
    n = n / 26;
  } while (n-- > 0);
  return (scsi ? "sd" : "vd") + suffix;
}

}  // namespace vmm::lifecycle
