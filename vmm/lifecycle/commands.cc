// define, start, shutdown, reboot, destroy, suspend/resume, undefine, setmem.
#include "lifecycle/commands.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "lifecycle/control_client.h"
#include "lifecycle/supervisor.h"
#include "lifecycle/vm_access.h"

namespace vmm::lifecycle {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

int fail(const std::string& msg) {
  std::fprintf(stderr, "vmm: %s\n", msg.c_str());
  return 1;
}

namespace {

// Paths in a definition are made absolute: `vmm start` runs from any directory.
void absolutize(MachineConfig& c) {
  auto abs = [](std::string& p) {
    if (!p.empty()) p = fs::absolute(p).lexically_normal().string();
  };
  abs(c.kernel);
  abs(c.initrd);
  for (auto& d : c.disks) abs(d.path);
  for (auto& d : c.scsi) abs(d.path);
  if (c.console && c.console->kind != ConsoleSpec::Kind::kStdio) abs(c.console->path);
  for (auto& p : c.serial_ports) abs(p.path);
}

int store(const StateDir& sd, Definition d, const std::string& how) {
  if (d.config.console && d.config.console->kind == ConsoleSpec::Kind::kStdio) {
    return fail("--console stdio cannot work in the background: use file=PATH or socket=PATH");
  }
  absolutize(d.config);
  // Each NIC gets its MAC now, as libvirt's define does: the guest sees the same one on every
  // start, and two VMs on one bridge never derive the same one from a reused tap name.
  for (NetSpec& n : d.config.nets)
    if (!n.mac) n.mac = new_mac();
  if (auto a = run_args(d); !a) return fail(a.error().message());
  if (auto s = make_dirs(sd.root); !s) return fail(s.error().message());
  // An existing definition is locked while it is replaced, so no command reads it half-way.
  FileLock lock;
  if (auto l = FileLock::acquire(sd.definition(d.name), LOCK_EX, false)) {
    lock = std::move(*l);
    std::string old;
    {
      std::ifstream f(sd.definition(d.name));
      std::stringstream ss;
      ss << f.rdbuf();
      old = ss.str();
    }
    // Redefining keeps the UUID, as virsh define of an existing name does.
    if (auto prev = parse_definition(old, sd.definition(d.name)); prev && d.uuid.empty()) {
      d.uuid = prev->uuid;
    }
  }
  if (d.uuid.empty()) d.uuid = new_uuid();
  if (auto s = write_file_atomic(sd.definition(d.name), to_json(d)); !s) {
    return fail(s.error().message());
  }
  std::printf("Domain '%s' defined%s\n\n", d.name.c_str(), how.c_str());
  return 0;
}

// Waits until no process holds the VM lock; false on timeout.
bool wait_stopped(const StateDir& sd, const std::string& name, double seconds) {
  auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (lock_held(sd.lock(name))) {
    if (Clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// The last line of the log that starts with "vmm: " (the reason a start failed).
std::string last_vmm_line(const std::string& log) {
  std::ifstream f(log);
  std::string line, last;
  while (std::getline(f, line)) {
    if (line.starts_with("vmm: ") && line.find("exited with code") == std::string::npos) {
      last = line.substr(5);
    }
  }
  return last.empty() ? "see " + log : last;
}

}  // namespace

// The VM must run; then the command goes over its control socket.
img::Result<Json> control_call(const StateDir& sd, const std::string& name, const std::string& cmd,
                               const Json& args) {
  if (!lock_held(sd.lock(name))) {
    return img::invalid_argument("VM '" + name + "' is not running");
  }
  auto c = ControlClient::connect(sd.control(name));
  if (!c) {
    return img::Unexpected(
        c.error().prepend("VM '" + name + "' runs but its control socket does not answer"));
  }
  auto r = c->call(cmd, args);
  if (!r) return img::Unexpected(r.error().prepend("VM '" + name + "'"));
  return r;
}

int cmd_define_file(const StateDir& sd, const std::string& file) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) return fail(file + " is not a regular file");
  if (fs::file_size(file, ec) > (16u << 20)) return fail(file + " is larger than 16 MiB");
  std::ifstream f(file);
  if (!f) return fail("cannot read " + file + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  auto d = parse_definition(ss.str(), file);
  if (!d) return fail(d.error().message());
  return store(sd, std::move(*d), " from " + file);
}

int cmd_define(const StateDir& sd, const std::string& name, const MachineConfig& cfg) {
  if (auto s = check_name(name); !s) return fail(s.error().message());
  Definition d{name, "", cfg};
  d.config.serial = "stdio";
  d.config.control.clear();
  return store(sd, std::move(d), "");
}

int cmd_start(const StateDir& sd, const std::string& name, const std::string& vmm_exe) {
  auto vm = open_vm(sd, name);
  if (!vm) return fail(vm.error().message());
  if (auto s = make_dirs(sd.run_dir(name)); !s) return fail(s.error().message());
  ::chmod(sd.run_dir(name).c_str(), 0700);
  // The VM lock, kept across fork and exec: it is released only when the VM's processes end.
  auto lock = FileLock::acquire(sd.lock(name), LOCK_EX | LOCK_NB, true, /*cloexec=*/false);
  for (int i = 0; !lock && lock.error().sys_errno() == EWOULDBLOCK && i < 20; ++i) {
    // A `vmm list` may hold a shared probe for an instant.
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    lock = FileLock::acquire(sd.lock(name), LOCK_EX | LOCK_NB, true, false);
  }
  if (!lock) {
    if (lock.error().sys_errno() == EWOULDBLOCK)
      return fail("VM '" + name + "' is already running");
    return fail(lock.error().message());
  }
  // Whatever a vmm that died left behind goes: a stale pid, sockets nobody serves, the old log.
  for (const std::string& p : {sd.pid(name), sd.control(name), sd.console(name), sd.serial(name),
                               sd.run_dir(name) + "/reboot", sd.log(name), sd.console_log(name)}) {
    ::unlink(p.c_str());
  }
  Definition def = vm->def;
  if (auto st = resolve_networks(sd, def.config); !st) {
    return fail("VM '" + name + "' cannot start: " + st.error().message());
  }
  auto args = run_args(def);
  if (!args) return fail(args.error().message());
  std::fflush(nullptr);
  pid_t sup = ::fork();
  if (sup < 0) return fail(std::string("fork: ") + std::strerror(errno));
  if (sup == 0) {
    ::close(vm->lock.release());  // the definition lock stays with this command only
    supervise(sd, name, *args, vmm_exe);
  }
  // Up = the control socket answers info with state running; failed = the supervisor ended.
  auto deadline = Clock::now() + std::chrono::seconds(60);
  for (;;) {
    int st = 0;
    if (::waitpid(sup, &st, WNOHANG) == sup) {
      return fail("VM '" + name + "' failed to start: " + last_vmm_line(sd.log(name)));
    }
    if (auto c = ControlClient::connect(sd.control(name), 2000)) {
      auto info = c->call("info");
      if (info && info->value("state", std::string()) == "running") break;
    }
    if (Clock::now() > deadline) {
      return fail("VM '" + name + "' did not come up within 60 s; see " + sd.log(name));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::printf("Domain '%s' started\n\n", name.c_str());
  return 0;
}

int cmd_shutdown(const StateDir& sd, const std::string& name, std::optional<double> timeout_s) {
  auto vm = open_vm(sd, name);
  if (!vm) return fail(vm.error().message());
  auto r = control_call(sd, name, "shutdown");
  if (!r) return fail(r.error().message());
  if (!timeout_s) {
    std::printf("Domain '%s' is being shutdown\n\n", name.c_str());
    return 0;
  }
  if (!wait_stopped(sd, name, *timeout_s)) {
    return fail(img::strfmt("VM '%s' did not shut down within %g s (it still runs: vmm destroy %s)",
                            name.c_str(), *timeout_s, name.c_str()));
  }
  std::printf("Domain '%s' is shut off\n\n", name.c_str());
  return 0;
}

int cmd_reboot(const StateDir& sd, const std::string& name) {
  auto vm = open_vm(sd, name);
  if (!vm) return fail(vm.error().message());
  if (!lock_held(sd.lock(name))) return fail("VM '" + name + "' is not running");
  // The guest's reset (or power-off) after this request restarts the machine in place.
  auto r = control_call(sd, name, "reboot");
  if (!r) return fail(r.error().message());
  std::printf("Domain '%s' is being rebooted\n\n", name.c_str());
  return 0;
}

int cmd_reset(const StateDir& sd, const std::string& name) {
  auto vm = open_vm(sd, name);
  if (!vm) return fail(vm.error().message());
  if (!lock_held(sd.lock(name))) return fail("VM '" + name + "' is not running");
  auto r = control_call(sd, name, "reset");
  if (!r) return fail(r.error().message());
  std::printf("Domain '%s' was reset\n\n", name.c_str());
  return 0;
}

int cmd_destroy(const StateDir& sd, const std::string& name) {
  auto vm = open_vm(sd, name);
  if (!vm) return fail(vm.error().message());
  if (!lock_held(sd.lock(name))) return fail("VM '" + name + "' is not running");
  auto r = control_call(sd, name, "destroy");
  if (!r || !wait_stopped(sd, name, 10)) {
    // The control socket is gone or the VM did not end: the power cord is SIGKILL, but only to a
    // process that is provably this VM's `vmm run`.
    auto pid = read_pid(sd.pid(name));
    if (!pid || !is_vmm_run(*pid, sd.control(name))) {
      return fail("VM '" + name + "' holds its lock but no vmm run process of it was found" +
                  (r ? std::string() : ": " + r.error().message()));
    }
    ::kill(*pid, SIGKILL);
    if (!wait_stopped(sd, name, 10)) return fail("VM '" + name + "' did not end after SIGKILL");
  }
  std::printf("Domain '%s' destroyed\n\n", name.c_str());
  return 0;
}

int cmd_suspend(const StateDir& sd, const std::string& name, bool resume) {
  auto vm = open_vm(sd, name);
  if (!vm) return fail(vm.error().message());
  auto r = control_call(sd, name, resume ? "resume" : "pause");
  if (!r) return fail(r.error().message());
  std::printf("Domain '%s' %s\n\n", name.c_str(), resume ? "resumed" : "suspended");
  return 0;
}

int cmd_undefine(const StateDir& sd, const std::string& name, bool remove_storage) {
  auto vm = open_vm(sd, name);
  if (!vm) return fail(vm.error().message());
  if (lock_held(sd.lock(name))) {
    return fail("VM '" + name + "' is running: shut it down or destroy it first");
  }
  if (remove_storage) {
    const MachineConfig& c = vm->def.config;
    std::vector<std::pair<std::string, std::string>> disks;
    for (size_t i = 0; i < c.disks.size(); ++i)
      disks.push_back({disk_target(false, i), c.disks[i].path});
    for (size_t i = 0; i < c.scsi.size(); ++i)
      disks.push_back({disk_target(true, i), c.scsi[i].path});
    for (const auto& [target, path] : disks) {
      if (::unlink(path.c_str()) < 0 && errno != ENOENT) {
        return fail("removing " + path + ": " + std::strerror(errno) + " (nothing was undefined)");
      }
      std::printf("Storage volume '%s'(%s) is removed.\n", target.c_str(), path.c_str());
    }
  }
  std::error_code ec;
  fs::remove_all(sd.run_dir(name), ec);
  if (::unlink(sd.definition(name).c_str()) < 0) {
    return fail("removing " + sd.definition(name) + ": " + std::strerror(errno));
  }
  std::printf("Domain '%s' has been undefined\n\n", name.c_str());
  return 0;
}

int cmd_setmem(const StateDir& sd, const std::string& name, uint64_t bytes) {
  auto vm = open_vm(sd, name);
  if (!vm) return fail(vm.error().message());
  if (!vm->def.config.balloon) {
    return fail("VM '" + name + "' has no balloon device (define it with --balloon)");
  }
  auto r = control_call(sd, name, "balloon", Json{{"value", bytes}});
  if (!r) return fail(r.error().message());
  return 0;
}

int cmd_blockresize(const StateDir& sd, const std::string& name, const std::string& disk,
                    uint64_t bytes) {
  auto vm = open_vm(sd, name, LOCK_SH);
  if (!vm) return fail(vm.error().message());
  const MachineConfig& c = vm->def.config;
  std::optional<size_t> index, lun;
  for (size_t i = 0; i < c.disks.size() && !index; ++i) {
    if (disk == disk_target(false, i) || disk == c.disks[i].path) index = i;
  }
  for (size_t i = 0; i < c.scsi.size() && !index && !lun; ++i) {
    if (disk == disk_target(true, i) || disk == c.scsi[i].path) lun = i;
  }
  if (!index && !lun) {
    return fail("VM '" + name + "' has no disk '" + disk + "' (vmm domblklist " + name +
                " lists them)");
  }
  Json args =
      index ? Json{{"index", *index}, {"size", bytes}} : Json{{"lun", *lun}, {"size", bytes}};
  auto r = control_call(sd, name, "block_resize", args);
  if (!r) {
    std::string m = r.error().message();
    if (m.find("is not running") != std::string::npos) {
      m += ": grow a shut-off VM's image with img resize " +
           (index ? c.disks[*index].path : c.scsi[*lun].path) + " SIZE";
    }
    return fail(m);
  }
  std::printf("Block device '%s' is resized\n", disk.c_str());  // virsh names it as given
  return 0;
}

}  // namespace vmm::lifecycle
