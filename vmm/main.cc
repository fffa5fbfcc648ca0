// vmm: a lean KVM VMM. Subcommands: `run` boots a kernel, `check` tells whether this host can.
// Errors are values everywhere below; CLI11 throws while parsing and is caught here.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "devices/log.h"
#include "machine/check.h"
#include "machine/config.h"
#include "machine/machine.h"

namespace {

int run_command(const vmm::MachineConfig& c) {
  auto m = vmm::Machine::create(c);
  if (!m) {
    std::fprintf(stderr, "vmm: %s\n", m.error().to_string().c_str());
    return m.error().code() == img::ErrorCode::kInvalidArgument ? vmm::kExitBadArguments
                                                                 : vmm::kExitVmmError;
  }
  return (*m)->run();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vmm: a lean KVM virtual machine monitor"};
  app.require_subcommand(1);
  bool debug = false;
  app.add_flag("--debug", debug, "log unhandled device accesses on stderr (also VMM_DEBUG=1)");

  vmm::MachineConfig cfg;
  std::string memory = "512M";
  std::vector<std::string> disks;
  CLI::App* run = app.add_subcommand("run", "boot a kernel (bzImage, vmlinux with PVH note, or ELF64)");
  run->add_option("--kernel", cfg.kernel, "kernel file")->required();
  run->add_option("--initrd", cfg.initrd, "initial ramdisk");
  run->add_option("--cmdline", cfg.cmdline, "kernel command line");
  run->add_option("--memory,-m", memory, "guest memory, e.g. 512M, 2G")->capture_default_str();
  run->add_option("--cpus", cfg.cpus, "number of vCPUs")->capture_default_str();
  run->add_option("--disk", disks, "PATH[,format=raw|qcow2][,readonly=on][,cache=none|writeback] (repeatable)");
  run->add_option("--serial", cfg.serial, "stdio | file:PATH | unix:PATH")->capture_default_str();
  std::string rng, console;
  run->add_option("--rng", rng,
                  "add a virtio-rng device fed by getrandom; optional limits: "
                  "--rng rate=BYTES/s[,max-request=BYTES]  e.g. --rng, --rng rate=64K/s")
      ->expected(0, 1);
  run->add_option("--console", console,
                  "add a virtio-console (the guest's hvc0) on stdio | file=PATH | socket=PATH  "
                  "e.g. --console socket=/tmp/con.sock (connects to a listener), with "
                  "--cmdline console=hvc0");
  std::vector<std::string> nets;
  run->add_option("--net", nets,
                  "add a virtio-net device on a tap: tap (create one; its name is printed) | "
                  "tap=NAME (an existing tap), optionally ,mac=XX:XX:XX:XX:XX:XX (default: "
                  "derived from the tap name)  e.g. --net tap=tap0,mac=02:00:00:00:00:01 "
                  "(repeatable)");
  std::string balloon;
  run->add_option("--balloon", balloon,
                  "add a virtio-balloon device; target=SIZE asks the guest to shrink to SIZE "
                  "(pages it gives back are returned to the host), stats=SECONDS polls its memory "
                  "statistics  e.g. --balloon, --balloon target=256M,stats=5")
      ->expected(0, 1);
  std::vector<std::string> scsi;
  run->add_option("--scsi", scsi,
                  "add a LUN on the virtio-scsi controller (one controller, target 0; the Nth "
                  "--scsi is LUN N-1): PATH[,format=raw|qcow2][,cache=none|writeback|writethrough]"
                  "[,readonly]  e.g. --scsi disk.qcow2,format=qcow2 --scsi iso.raw,readonly "
                  "(repeatable)");
  run->add_flag("--hugepages", cfg.hugepages, "back guest memory with 2 MiB huge pages");
  bool no_pvm_workarounds = false;
  run->add_flag("--no-pvm-workarounds", no_pvm_workarounds,
                "under kvm_pvm, do not add noxsave nosmap nosmep clearcpuid=... to a Linux cmdline");
  run->add_option("--control", cfg.control,
                  "serve the control socket (JSON lines: info, pause, resume, shutdown, reboot, "
                  "destroy, disk-stats) on this unix socket path; see docs/vmm-control.md");
  CLI::App* check = app.add_subcommand("check", "check that this host can run guests");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : vmm::kExitBadArguments;
  }
  if (debug) vmm::set_debug(true);
  if (check->parsed()) return vmm::print_host_checks(vmm::run_host_checks());

  auto mem = vmm::parse_size(memory);
  if (!mem) {
    std::fprintf(stderr, "vmm: --memory: %s\n", mem.error().message().c_str());
    return vmm::kExitBadArguments;
  }
  cfg.memory = *mem;
  cfg.pvm_workarounds = !no_pvm_workarounds;
  for (const std::string& d : disks) {
    auto spec = vmm::parse_disk_spec(d);
    if (!spec) {
      std::fprintf(stderr, "vmm: %s\n", spec.error().message().c_str());
      return vmm::kExitBadArguments;
    }
    cfg.disks.push_back(*spec);
  }
  for (const std::string& d : scsi) {
    auto spec = vmm::parse_scsi_spec(d);
    if (!spec) {
      std::fprintf(stderr, "vmm: %s\n", spec.error().message().c_str());
      return vmm::kExitBadArguments;
    }
    cfg.scsi.push_back(*spec);
  }
  if (run->count("--rng") > 0) {
    auto spec = vmm::parse_rng_spec(rng);
    if (!spec) {
      std::fprintf(stderr, "vmm: %s\n", spec.error().message().c_str());
      return vmm::kExitBadArguments;
    }
    cfg.rng = *spec;
  }
  if (run->count("--console") > 0) {
    auto spec = vmm::parse_console_spec(console);
    if (!spec) {
      std::fprintf(stderr, "vmm: %s\n", spec.error().message().c_str());
      return vmm::kExitBadArguments;
    }
    cfg.console = *spec;
  }
  for (const std::string& n : nets) {
    auto spec = vmm::parse_net_spec(n);
    if (!spec) {
      std::fprintf(stderr, "vmm: %s\n", spec.error().message().c_str());
      return vmm::kExitBadArguments;
    }
    cfg.nets.push_back(*spec);
  }
  if (run->count("--balloon") > 0) {
    auto spec = vmm::parse_balloon_spec(balloon);
    if (!spec) {
      std::fprintf(stderr, "vmm: %s\n", spec.error().message().c_str());
      return vmm::kExitBadArguments;
    }
    cfg.balloon = *spec;
  }
  if (auto s = vmm::validate(cfg); !s) {
    std::fprintf(stderr, "vmm: %s\n", s.error().message().c_str());
    return vmm::kExitBadArguments;
  }
  return run_command(cfg);
}
