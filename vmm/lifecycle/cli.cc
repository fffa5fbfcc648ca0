#include "lifecycle/cli.h"

#include <unistd.h>

#include <climits>
#include <cstdio>
#include <filesystem>
#include <string_view>

#include "lifecycle/clone.h"
#include "lifecycle/commands.h"
#include "lifecycle/create.h"
#include "lifecycle/run_flags.h"
#include "machine/config.h"

namespace vmm::lifecycle {

struct LifecycleCli::Options {
  std::string state_dir;
  std::string name;
  std::string file;
  std::string size;
  std::string disk;
  std::string bridge;
  std::string subnet;
  bool all = false;
  bool remove_storage = false;
  bool disable = false;
  double timeout = -1;
  RunFlags run;
  CreateArgs create;
  CloneArgs clone;
  CLI::App* define = nullptr;
  std::vector<std::pair<CLI::App*, std::string>> subs;  // subcommand, its name
};

LifecycleCli::LifecycleCli(CLI::App& app) : o_(std::make_unique<Options>()) {
  Options& o = *o_;
  auto sub = [&](const char* name, const char* help, bool takes_name = true) {
    CLI::App* c = app.add_subcommand(name, help);
    c->add_option("--state-dir", o.state_dir,
                  "the state directory (default $XDG_STATE_HOME/vmm, /var/lib/vmm as root, "
                  "else ~/.local/state/vmm)");
    if (takes_name) {
      bool net = std::string_view(name).starts_with("net-");
      c->add_option("NAME", o.name, net ? "the network's name" : "the VM's name")->required();
    }
    o.subs.push_back({c, name});
    return c;
  };
  o.define =
      sub("define", "define a VM from a definition file, or from --name NAME and vmm run's flags",
          false);
  o.define->add_option("FILE", o.file, "a definition file (JSON, docs/vmm-lifecycle.md)");
  o.define->add_option("--name", o.name, "the VM's name (with the same flags as vmm run)");
  add_run_flags(*o.define, o.run, false);
  CLI::App* create =
      sub("create", "make a VM's disk images with libimg and define it (virt-install-like)", false);
  CreateArgs& ca = o.create;
  create->add_option("--name,-n", ca.name, "the VM's name")->required();
  create->add_option("--vcpus", ca.vcpus, "number of vCPUs")->capture_default_str();
  create->add_option("--memory", ca.memory, "guest memory, e.g. 512M, 2G")->capture_default_str();
  create->add_option("--kernel", ca.kernel, "kernel file")->required();
  create->add_option("--initrd", ca.initrd, "initial ramdisk");
  create->add_option("--cmdline", ca.cmdline, "kernel command line");
  create->add_option("--disk", ca.disks,
                     "size=SIZE[,format=qcow2|raw][,path=P] (a new image) | path=P,backing=BASE "
                     "(a qcow2 overlay on BASE) | path=P (an existing image); also "
                     ",cache=none|writeback ,readonly=on (repeatable)");
  create->add_option("--network", ca.networks,
                     "network=NAME (a vmm net-define network) | bridge=BR (a tap on that "
                     "bridge) | tap (create one) | tap=NAME; then [,mac=XX:XX:XX:XX:XX:XX] "
                     "(repeatable)");
  create->add_flag("--start", ca.start, "start the VM once it is defined");
  CLI::App* clone = sub("clone", "copy a shut-off VM with its disks (virt-clone-like)", false);
  clone->add_option("--original,-o", o.clone.original, "the VM to copy")->required();
  clone->add_option("--name,-n", o.clone.name, "the clone's name (default ORIGINAL-clone)");
  clone->add_flag("--auto-clone", o.clone.auto_clone,
                  "copy the writable disks beside the originals");
  clone->add_flag("--linked", o.clone.linked,
                  "make each disk a qcow2 overlay on the original's instead of a full copy");
  sub("start", "start a defined VM in the background");
  sub("list", "list the running VMs (--all: the defined ones too)", false)
      ->add_flag("--all", o.all, "show shut-off VMs too");
  sub("shutdown", "ask the guest to shut down (Ctrl-Alt-Del)")
      ->add_option("--timeout", o.timeout, "wait up to SECONDS for the VM to end, then report")
      ->check(CLI::Range(0.0, 86400.0));
  sub("reboot", "ask the guest to reboot (Ctrl-Alt-Del); its reset restarts the machine in place");
  sub("reset", "reset the machine at once, as a reset button (the guest is not asked)");
  sub("destroy", "stop the VM at once (the power cord)");
  sub("suspend", "pause the VM's vCPUs and devices");
  sub("resume", "resume a suspended VM");
  sub("undefine", "remove a shut-off VM's definition and runtime files")
      ->add_flag("--remove-all-storage", o.remove_storage, "delete its disk images too");
  sub("dominfo", "show the VM's configuration and state");
  sub("domblklist", "list the VM's disks (Target, Source)");
  sub("console", "attach to the VM's serial console (Ctrl-] detaches)");
  sub("setmem", "set the memory the guest keeps, through its balloon device")
      ->add_option("SIZE", o.size, "e.g. 256M")
      ->required();
  CLI::App* br = sub("blockresize", "grow a running VM's disk; the guest sees the new size");
  br->add_option("DISK", o.disk, "the disk's target (vda, as domblklist shows) or its image path")
      ->required();
  br->add_option("SIZE", o.size,
                 "the new size: 20G, 512M, 1048576B; a bare number is KiB, as in virsh; rounded up "
                 "to a multiple of 512 bytes")
      ->required();
  br->footer("Example: vmm blockresize web vda 20G");
  sub("domiflist", "list the VM's network interfaces (Interface, Type, Source, Model, MAC)");
  sub("domifstat", "show a running VM's interface counters")
      ->add_option("INTERFACE", o.disk, "the interface's tap (as domiflist shows) or its MAC")
      ->required();
  CLI::App* nd = sub("net-define", "define a network: a bridge that the VMs' taps join");
  nd->add_option("--bridge", o.bridge, "the bridge's name (at most 15 characters)")->required();
  nd->add_option("--subnet", o.subnet,
                 "an IPv4 address for the bridge, e.g. 192.168.100.1/24 (10.0.0.0/24 gives it "
                 "10.0.0.1); no DHCP or NAT");
  nd->footer("Example: vmm net-define lab --bridge vmmbr0 --subnet 192.168.100.1/24");
  sub("net-start", "start a network: make its bridge and set it up");
  sub("net-stop", "stop a network: delete its bridge (its VMs' taps are left unplugged)")
      ->alias("net-destroy");
  sub("net-list", "list the active networks (--all: the inactive ones too)", false)
      ->add_flag("--all", o.all, "show inactive networks too");
  sub("net-undefine", "remove an inactive network's definition");
  sub("net-autostart", "mark a network to start with the first VM that needs it")
      ->add_flag("--disable", o.disable, "unmark it");
  sub("net-info", "show a network's definition and state");
}

LifecycleCli::~LifecycleCli() = default;

namespace {

std::string self_exe() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "vmm";
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace

std::optional<int> LifecycleCli::dispatch() {
  Options& o = *o_;
  std::string cmd;
  for (auto& [c, n] : o.subs)
    if (c->parsed()) cmd = n;
  if (cmd.empty()) return std::nullopt;
  StateDir sd;
  if (!o.state_dir.empty()) {
    // Absolute, so that the paths in a running VM's command line (its control socket, which
    // identifies it) do not depend on the directory a later command runs in.
    sd.root = std::filesystem::absolute(o.state_dir).lexically_normal().string();
    while (sd.root.size() > 1 && sd.root.ends_with('/')) sd.root.pop_back();
  } else {
    auto d = default_state_dir();
    if (!d) return fail(d.error().message());
    sd.root = *d;
  }
  const std::string& n = o.name;
  if (cmd == "define") {
    if (o.file.empty() == o.name.empty()) {
      std::fprintf(stderr, "vmm: define takes a FILE or --name NAME with vmm run's flags\n");
      return kExitBadArguments;
    }
    if (!o.file.empty()) {
      for (const CLI::Option* opt : o.define->get_options()) {
        std::string l = opt->get_name();
        if (opt->count() > 0 && l != "FILE" && l != "--state-dir") {
          std::fprintf(stderr, "vmm: define FILE takes no %s: the file says everything\n",
                       l.c_str());
          return kExitBadArguments;
        }
      }
      return cmd_define_file(sd, o.file);
    }
    auto cfg = to_config(*o.define, o.run);
    if (!cfg) {
      std::fprintf(stderr, "vmm: %s\n", cfg.error().message().c_str());
      return kExitBadArguments;
    }
    return cmd_define(sd, n, *cfg);
  }
  if (cmd == "create") return cmd_create(sd, o.create, self_exe());
  if (cmd == "clone") return cmd_clone(sd, o.clone);
  if (cmd == "start") return cmd_start(sd, n, self_exe());
  if (cmd == "domiflist") return cmd_domiflist(sd, n);
  if (cmd == "domifstat") return cmd_domifstat(sd, n, o.disk);
  if (cmd == "net-define") return cmd_net_define(sd, n, o.bridge, o.subnet);
  if (cmd == "net-start") return cmd_net_start(sd, n);
  if (cmd == "net-stop") return cmd_net_stop(sd, n);
  if (cmd == "net-list") return cmd_net_list(sd, o.all);
  if (cmd == "net-undefine") return cmd_net_undefine(sd, n);
  if (cmd == "net-autostart") return cmd_net_autostart(sd, n, !o.disable);
  if (cmd == "net-info") return cmd_net_info(sd, n);
  if (cmd == "list") return cmd_list(sd, o.all);
  if (cmd == "shutdown") {
    return cmd_shutdown(sd, n, o.timeout >= 0 ? std::optional<double>(o.timeout) : std::nullopt);
  }
  if (cmd == "reboot") return cmd_reboot(sd, n);
  if (cmd == "reset") return cmd_reset(sd, n);
  if (cmd == "destroy") return cmd_destroy(sd, n);
  if (cmd == "suspend") return cmd_suspend(sd, n, false);
  if (cmd == "resume") return cmd_suspend(sd, n, true);
  if (cmd == "undefine") return cmd_undefine(sd, n, o.remove_storage);
  if (cmd == "dominfo") return cmd_dominfo(sd, n);
  if (cmd == "domblklist") return cmd_domblklist(sd, n);
  if (cmd == "console") return cmd_console(sd, n);
  if (cmd == "setmem") {
    auto size = parse_size(o.size);
    if (!size) {
      std::fprintf(stderr, "vmm: setmem: %s\n", size.error().message().c_str());
      return kExitBadArguments;
    }
    return cmd_setmem(sd, n, *size);
  }
  if (cmd == "blockresize") {
    // virsh's scaled integer: KiB without a unit.
    bool bare = !o.size.empty() && o.size.find_first_not_of("0123456789") == std::string::npos;
    auto size = parse_size(bare ? o.size + "K" : o.size);
    if (!size || *size == 0) {
      std::fprintf(stderr, "vmm: blockresize: %s\n",
                   size ? "the size must be more than 0" : size.error().message().c_str());
      return kExitBadArguments;
    }
    if (*size > UINT64_MAX - 511) {
      std::fprintf(stderr, "vmm: blockresize: size '%s' is too large\n", o.size.c_str());
      return kExitBadArguments;
    }
    return cmd_blockresize(sd, n, o.disk, (*size + 511) / 512 * 512);
  }
  return std::nullopt;
}

}  // namespace vmm::lifecycle
