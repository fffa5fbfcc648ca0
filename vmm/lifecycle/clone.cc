#include "lifecycle/clone.h"

#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "img/image.h"
#include "img/io_loop.h"
#include "img/ops.h"
#include "lifecycle/commands.h"
#include "lifecycle/definition.h"
#include "lifecycle/vm_access.h"

namespace vmm::lifecycle {
namespace {

namespace fs = std::filesystem;

// The clone's disk: beside the source's, named for the clone and the target ("vda").
std::string clone_path(const std::string& src, const std::string& name, const std::string& target) {
  fs::path p(src);
  std::string ext = p.extension().string();
  return (p.parent_path() / (name + "-" + target + (ext.empty() ? ".img" : ext))).string();
}

class Bar {
 public:
  explicit Bar(bool on) : on_(on) {}
  void update(uint64_t done, uint64_t total) {
    if (!on_ || total == 0) return;
    int pct = static_cast<int>(done * 100 / total);
    if (pct == last_) return;
    last_ = pct;
    std::fprintf(stderr, "\r    (%d.00/100%%)", pct);
  }
  void finish() {
    if (on_ && last_ >= 0) std::fprintf(stderr, "\n");
  }

 private:
  bool on_;
  int last_ = -1;
};

// Copies src (with its backing chain, flattened) into a new image dst of the same format.
img::Status full_copy(img::IoLoop& loop, const std::string& src, const std::string& fmt,
                      const std::string& dst) {
  auto in = loop.run(img::open_image(loop, src, {.format = fmt, .read_only = true}));
  if (!in) return img::Unexpected(in.error().prepend(src));
  std::string out_fmt = (*in)->format_name();
  img::Qcow2CreateOptions o;
  o.size = (*in)->size();
  RETURN_IF_ERROR(loop.run(img::create_image(loop, dst, out_fmt, o.size, o)));
  auto out = loop.run(img::open_image(loop, dst, {.format = out_fmt}));
  if (!out) return img::Unexpected(out.error().prepend(dst));
  Bar bar(::isatty(2));
  img::ConvertOptions c;
  c.progress = [&bar](uint64_t done, uint64_t total) { bar.update(done, total); };
  auto stats = loop.run(img::convert(loop, **in, **out, c));
  bar.finish();
  if (!stats) return img::Unexpected(stats.error());
  RETURN_IF_ERROR(loop.run((*out)->close()));
  (void)loop.run((*in)->close());
  return {};
}

img::Status linked_copy(img::IoLoop& loop, const std::string& src, const std::string& fmt,
                        const std::string& dst) {
  auto in = loop.run(img::open_image(
      loop, src, {.format = fmt, .read_only = true, .backing = img::BackingPolicy::kIgnore}));
  if (!in) return img::Unexpected(in.error().prepend(src));
  img::Qcow2CreateOptions o;
  o.size = (*in)->size();
  o.backing_file = src;
  o.backing_format = (*in)->format_name();
  (void)loop.run((*in)->close());
  return loop.run(img::create_image(loop, dst, "qcow2", o.size, o));
}

}  // namespace

int cmd_clone(const StateDir& sd, const CloneArgs& a) {
  // The source is locked for the whole copy: it cannot be started meanwhile.
  auto vm = open_vm(sd, a.original, LOCK_EX);
  if (!vm) return fail(vm.error().message());
  if (lock_held(sd.lock(a.original))) {
    return fail("VM '" + a.original +
                "' is running: shut it down first (its disks would change "
                "under the copy)");
  }
  std::string name = a.name;
  std::error_code ec;
  if (name.empty()) {
    name = a.original + "-clone";
    for (int i = 1; fs::exists(sd.definition(name), ec); ++i) {
      name = a.original + "-clone" + std::to_string(i);
    }
  } else if (fs::exists(sd.definition(name), ec)) {
    return fail("VM '" + name + "' already exists");
  }
  if (auto s = check_name(name); !s) return fail(s.error().message());

  MachineConfig c = vm->def.config;
  struct Copy {
    std::string* path;
    std::string format, src;
  };
  std::vector<Copy> copies;
  for (size_t i = 0; i < c.disks.size(); ++i) {
    if (!c.disks[i].read_only)
      copies.push_back({&c.disks[i].path, c.disks[i].format, c.disks[i].path});
  }
  for (size_t i = 0; i < c.scsi.size(); ++i) {
    if (!c.scsi[i].read_only) copies.push_back({&c.scsi[i].path, c.scsi[i].format, c.scsi[i].path});
  }
  if (!copies.empty() && !a.auto_clone) {
    return fail("VM '" + a.original + "' has writable disks: give --auto-clone to copy them");
  }
  for (Copy& cp : copies) {
    std::string target;
    for (size_t i = 0; i < c.disks.size(); ++i)
      if (&c.disks[i].path == cp.path) target = disk_target(false, i);
    for (size_t i = 0; i < c.scsi.size(); ++i)
      if (&c.scsi[i].path == cp.path) target = disk_target(true, i);
    std::string dst = clone_path(cp.src, name, target);
    if (fs::exists(dst, ec)) return fail("the clone's disk " + dst + " exists already");
    *cp.path = dst;
  }
  auto loop = img::IoLoop::create();
  if (!loop) return fail(loop.error().to_string());
  std::vector<std::string> made;
  auto undo = [&] {
    for (const std::string& p : made) fs::remove(p, ec);
  };
  for (Copy& cp : copies) {
    std::printf("Cloning %s to %s%s\n", cp.src.c_str(), cp.path->c_str(),
                a.linked ? " (linked: a qcow2 overlay)" : "");
    std::fflush(stdout);
    auto st = a.linked ? linked_copy(**loop, cp.src, cp.format, *cp.path)
                       : full_copy(**loop, cp.src, cp.format, *cp.path);
    made.push_back(*cp.path);
    if (!st) {
      undo();
      return fail("cloning " + cp.src + ": " + st.error().message());
    }
    // An overlay is always qcow2; a full copy keeps the source's format (probed when unset).
    if (a.linked) {
      for (auto& d : c.disks)
        if (&d.path == cp.path) d.format = "qcow2";
      for (auto& d : c.scsi)
        if (&d.path == cp.path) d.format = "qcow2";
    }
  }
  // New identity: MACs, and taps created at start (two VMs cannot share one tap).
  for (NetSpec& nic : c.nets) {
    nic.tap.clear();
    nic.mac = new_mac();
  }
  if (int rc = cmd_define(sd, name, c); rc != 0) {  // a new UUID with the new name
    undo();
    return rc;
  }
  std::printf("Clone '%s' created successfully.\n", name.c_str());
  return 0;
}

}  // namespace vmm::lifecycle
