#include "lifecycle/create.h"

#include <cstdio>
#include <filesystem>

#include "img/image.h"
#include "img/io_loop.h"
#include "img/ops.h"
#include "lifecycle/commands.h"
#include "lifecycle/definition.h"

namespace vmm::lifecycle {
namespace {

namespace fs = std::filesystem;

struct NewDisk {
  DiskSpec spec;
  uint64_t size = 0;    // 0: use an existing image
  std::string backing;  // overlay on this image
  std::string backing_format;
};

img::Result<NewDisk> parse_create_disk(const StateDir& sd, const std::string& name, size_t index,
                                       const std::string& s) {
  NewDisk d;
  std::string format, size;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t next = s.find(',', pos);
    std::string kv = s.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    pos = next == std::string::npos ? s.size() + 1 : next + 1;
    size_t eq = kv.find('=');
    std::string k = kv.substr(0, eq), v = eq == std::string::npos ? "" : kv.substr(eq + 1);
    if (k == "path") {
      d.spec.path = v;
    } else if (k == "size") {
      size = v;
    } else if (k == "format") {
      format = v;
    } else if (k == "backing") {
      d.backing = v;
    } else if (k == "cache" && (v == "none" || v == "writeback")) {
      d.spec.direct = v == "none";
    } else if (k == "readonly" && (v == "on" || v.empty())) {
      d.spec.read_only = true;
    } else {
      return img::invalid_argument("--disk: unknown or bad option '" + kv +
                                   "' (size=, path=, format=, backing=, cache=, readonly=on)");
    }
  }
  if (format != "" && format != "raw" && format != "qcow2") {
    return img::invalid_argument("--disk format must be raw or qcow2, not '" + format + "'");
  }
  if (!size.empty() && !d.backing.empty()) {
    return img::invalid_argument(
        "--disk: give size= for a new image or backing= for an overlay, "
        "not both");
  }
  if (!d.backing.empty() && format == "raw") {
    return img::invalid_argument("--disk: an overlay (backing=) is a qcow2 image");
  }
  if (!size.empty()) {
    ASSIGN_OR_RETURN(d.size, parse_size(size));
    if (d.size == 0) return img::invalid_argument("--disk size must be above 0");
    if (format.empty()) format = "qcow2";
  } else if (!d.backing.empty()) {
    format = "qcow2";
  } else if (d.spec.path.empty()) {
    return img::invalid_argument("--disk needs size=SIZE, path=PATH or both: '" + s + "'");
  }
  if (d.spec.path.empty()) {
    d.spec.path = sd.root + "/images/" + name + "-" + disk_target(false, index) + "." + format;
  }
  d.spec.path = fs::absolute(d.spec.path).lexically_normal().string();
  if (!d.backing.empty()) d.backing = fs::absolute(d.backing).lexically_normal().string();
  d.spec.format = format;
  return d;
}

// Makes the image d names on loop; fills in the overlay's size from its backing image.
img::Status make_image(img::IoLoop& loop, NewDisk& d) {
  if (!d.backing.empty()) {
    auto base = loop.run(img::open_image(
        loop, d.backing, {.read_only = true, .backing = img::BackingPolicy::kIgnore}));
    if (!base) return img::Unexpected(base.error().prepend("backing image " + d.backing));
    d.size = (*base)->size();
    d.backing_format = (*base)->format_name();
    (void)loop.run((*base)->close());
  }
  std::error_code ec;
  fs::create_directories(fs::path(d.spec.path).parent_path(), ec);
  img::Qcow2CreateOptions o;
  o.size = d.size;
  o.backing_file = d.backing;
  o.backing_format = d.backing_format;
  return loop.run(img::create_image(loop, d.spec.path, d.spec.format, d.size, o));
}

}  // namespace

int cmd_create(const StateDir& sd, const CreateArgs& a, const std::string& vmm_exe) {
  if (auto s = check_name(a.name); !s) return fail(s.error().message());
  std::error_code ec;
  if (fs::exists(sd.definition(a.name), ec)) return fail("VM '" + a.name + "' already exists");
  MachineConfig c;
  c.on_reboot = OnReboot::kRestart;  // virt-install's default: the guest's reboot boots it again
  c.kernel = a.kernel;
  c.initrd = a.initrd;
  c.cmdline = a.cmdline;
  c.cpus = a.vcpus;
  auto mem = parse_size(a.memory);
  if (!mem) return fail("--memory: " + mem.error().message());
  c.memory = *mem;
  for (const std::string& n : a.networks) {
    auto spec = parse_net_spec(n);
    if (!spec) return fail(spec.error().message());
    c.nets.push_back(*spec);
  }
  if (auto s = validate(c); !s) return fail(s.error().message());
  std::vector<NewDisk> disks;
  for (size_t i = 0; i < a.disks.size(); ++i) {
    auto d = parse_create_disk(sd, a.name, i, a.disks[i]);
    if (!d) return fail(d.error().message());
    bool creates = d->size > 0 || !d->backing.empty();
    if (creates && fs::exists(d->spec.path, ec)) {
      return fail("--disk " + d->spec.path +
                  " exists: give size= or backing= only for a new image");
    }
    if (!creates && !fs::exists(d->spec.path, ec)) {
      return fail("--disk " + d->spec.path + " does not exist (size=SIZE makes a new one)");
    }
    disks.push_back(*d);
  }
  auto loop = img::IoLoop::create();
  if (!loop) return fail(loop.error().to_string());
  std::vector<std::string> made;
  auto undo = [&] {
    for (const std::string& p : made) fs::remove(p, ec);
  };
  for (size_t i = 0; i < disks.size(); ++i) {
    NewDisk& d = disks[i];
    if (d.size > 0 || !d.backing.empty()) {
      if (auto s = make_image(**loop, d); !s) {
        undo();
        return fail("creating " + d.spec.path + ": " + s.error().message());
      }
      made.push_back(d.spec.path);
      std::printf("Disk '%s': created %s (%s, %llu bytes%s%s)\n", disk_target(false, i).c_str(),
                  d.spec.path.c_str(), d.spec.format.c_str(),
                  static_cast<unsigned long long>(d.size), d.backing.empty() ? "" : ", backing ",
                  d.backing.c_str());
    }
    c.disks.push_back(d.spec);
  }
  if (int rc = cmd_define(sd, a.name, c); rc != 0) {
    undo();
    return rc;
  }
  return a.start ? cmd_start(sd, a.name, vmm_exe) : 0;
}

}  // namespace vmm::lifecycle
