#include "lifecycle/run_flags.h"

namespace vmm::lifecycle {

void add_run_flags(CLI::App& run, RunFlags& f, bool with_host_io) {
  MachineConfig& cfg = f.cfg;
  run.add_option("--kernel", cfg.kernel, "kernel file")->required(with_host_io);
  run.add_option("--initrd", cfg.initrd, "initial ramdisk");
  run.add_option("--cmdline", cfg.cmdline, "kernel command line");
  run.add_option("--memory,-m", f.memory, "guest memory, e.g. 512M, 2G")->capture_default_str();
  run.add_option("--cpus", cfg.cpus, "number of vCPUs")->capture_default_str();
  run.add_option("--disk", f.disks,
                 "PATH[,format=raw|qcow2][,readonly=on][,cache=none|writeback] (repeatable)");
  if (with_host_io) {
    run.add_option("--serial", cfg.serial, "stdio | file:PATH | unix:PATH")->capture_default_str();
  }
  run.add_option("--rng", f.rng,
                 "add a virtio-rng device fed by getrandom; optional limits: "
                 "--rng rate=BYTES/s[,max-request=BYTES]  e.g. --rng, --rng rate=64K/s")
      ->expected(0, 1);
  run.add_option("--console", f.console,
                 "add a virtio-console (the guest's hvc0) on stdio | file=PATH | socket=PATH  "
                 "e.g. --console socket=/tmp/con.sock (connects to a listener), with "
                 "--cmdline console=hvc0");
  run.add_option("--serial-port", f.serial_ports,
                 "add a named port to the virtio-console (virtio-serial; in a Linux guest "
                 "/dev/vport*pN, named in /sys/class/virtio-ports/*/name): name=NAME,path=SOCKET "
                 "(connects to a listening unix socket) | name=NAME,file=PATH (output only)  "
                 "e.g. --serial-port name=org.example.0,path=/tmp/port.sock (repeatable)");
  run.add_option("--net", f.nets,
                 "add a virtio-net device on a tap: tap (create one; its name is printed) | "
                 "tap=NAME (an existing tap), optionally ,mac=XX:XX:XX:XX:XX:XX (default: "
                 "derived from the tap name)  e.g. --net tap=tap0,mac=02:00:00:00:00:01 "
                 "(repeatable)");
  run.add_option("--balloon", f.balloon,
                 "add a virtio-balloon device; target=SIZE asks the guest to shrink to SIZE "
                 "(pages it gives back are returned to the host), stats=SECONDS polls its memory "
                 "statistics  e.g. --balloon, --balloon target=256M,stats=5")
      ->expected(0, 1);
  run.add_option("--scsi", f.scsi,
                 "add a LUN on the virtio-scsi controller (one controller, target 0; the Nth "
                 "--scsi is LUN N-1): PATH[,format=raw|qcow2][,cache=none|writeback|writethrough]"
                 "[,readonly]  e.g. --scsi disk.qcow2,format=qcow2 --scsi iso.raw,readonly "
                 "(repeatable)");
  run.add_flag("--hugepages", cfg.hugepages, "back guest memory with 2 MiB huge pages");
  run.add_flag("--mem-prealloc", cfg.mem_prealloc,
               "back all guest memory before the guest starts (as QEMU's -mem-prealloc): a host "
               "short of memory or huge pages fails now, not mid-run");
  run.add_flag("--no-pvm-workarounds", f.no_pvm_workarounds,
               "under kvm_pvm, do not add noxsave nosmap nosmep clearcpuid=... to a Linux cmdline");
  if (with_host_io) {
    run.add_option("--control", cfg.control,
                   "serve the control socket (JSON lines: info, pause, resume, shutdown, reboot, "
                   "destroy, disk-stats, balloon, block_resize) on this unix socket path; see "
                   "docs/vmm-control.md");
  }
  // vmm run ends on a guest reset as Firecracker does; a defined VM restarts, as libvirt's do.
  f.on_reboot = with_host_io ? "destroy" : "restart";
  run.add_option("--on-reboot", f.on_reboot,
                 "what a guest reboot (or triple fault) does: restart (reset the machine and "
                 "boot again in this process) or destroy (end the VM, exit 0)")
      ->capture_default_str();
  {
    run.add_option("--seccomp", cfg.seccomp,
                   "per-thread seccomp filters: on (a forbidden call kills the VMM), log (allow "
                   "and log to the kernel's audit log), off; see docs/vmm-security.md")
        ->capture_default_str();
    run.add_option("--user", cfg.user,
                   "drop root to this user (name or uid) once /dev/kvm, taps, images and sockets "
                   "are open");
    run.add_option("--group", cfg.group, "with --user: this group (default: the user's own)");
  }
}

img::Result<MachineConfig> to_config(const CLI::App& run, const RunFlags& f) {
  MachineConfig cfg = f.cfg;
  auto mem = parse_size(f.memory);
  if (!mem) return img::invalid_argument("--memory: " + mem.error().message());
  cfg.memory = *mem;
  cfg.pvm_workarounds = !f.no_pvm_workarounds;
  ASSIGN_OR_RETURN(cfg.on_reboot, parse_on_reboot(f.on_reboot));
  for (const std::string& d : f.disks) {
    ASSIGN_OR_RETURN(auto spec, parse_disk_spec(d));
    cfg.disks.push_back(spec);
  }
  for (const std::string& d : f.scsi) {
    ASSIGN_OR_RETURN(auto spec, parse_scsi_spec(d));
    cfg.scsi.push_back(spec);
  }
  if (run.count("--rng") > 0) {
    ASSIGN_OR_RETURN(auto spec, parse_rng_spec(f.rng));
    cfg.rng = spec;
  }
  if (run.count("--console") > 0) {
    ASSIGN_OR_RETURN(auto spec, parse_console_spec(f.console));
    cfg.console = spec;
  }
  for (const std::string& p : f.serial_ports) {
    ASSIGN_OR_RETURN(auto spec, parse_serial_port_spec(p));
    cfg.serial_ports.push_back(spec);
  }
  for (const std::string& n : f.nets) {
    ASSIGN_OR_RETURN(auto spec, parse_net_spec(n));
    cfg.nets.push_back(spec);
  }
  if (run.count("--balloon") > 0) {
    ASSIGN_OR_RETURN(auto spec, parse_balloon_spec(f.balloon));
    cfg.balloon = spec;
  }
  RETURN_IF_ERROR(validate(cfg));
  return cfg;
}

}  // namespace vmm::lifecycle
