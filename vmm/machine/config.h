// What `vmm run` asks for, parsed and validated before any KVM call, and the exit codes the VMM
// process ends with.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "img/status.h"

namespace vmm {

// The default --seccomp: "on", except in a build with a sanitizer runtime (tools/clang-setup.sh),
// whose own calls no allow-list should hold: LeakSanitizer clones a tracer thread and ptraces the
// process at exit after listing /proc/self/task, and a report runs llvm-symbolizer. Those builds
// default to "off" so that the suite under ASan tests the VMM, not its filters (the gcc suite
// tests those, and --seccomp on still works there).
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define VMM_SANITIZER_RUNTIME 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define VMM_SANITIZER_RUNTIME 1
#endif
#ifdef VMM_SANITIZER_RUNTIME
inline constexpr const char* kDefaultSeccomp = "off";
#else
inline constexpr const char* kDefaultSeccomp = "on";
#endif

// Process exit codes of `vmm run` (documented in docs/vmm.md).
enum ExitCode : int {
  kExitGuestReset = 0,     // guest reset through the i8042 / reset event / shutdown
  kExitGuestPowerOff = 0,  // guest powered off (ACPI S5), as QEMU and Firecracker exit 0
  kExitVmmError = 1,       // setup failed (kernel, memory, KVM): the message says why
  kExitBadArguments = 2,   // command line rejected
  kExitTripleFault = 3,    // KVM_EXIT_SHUTDOWN
  kExitInternalError = 4,  // KVM internal error, emulation failure, failed entry
  kExitGuestCrash = 5,     // guest reported a crash (pvpanic-style system event)
  kExitDestroyed = 6,      // destroyed over the control socket (or a shutdown timeout ran out)
  kExitInterrupted = 130,  // SIGINT/SIGTERM
};

enum class OnReboot { kDestroy, kRestart };
// "destroy" or "restart" (libvirt's on_reboot words).
img::Result<OnReboot> parse_on_reboot(const std::string& s);
const char* on_reboot_name(OnReboot r);

struct DiskSpec {
  std::string path;
  std::string format;  // "" = probe, "raw", "qcow2"
  bool read_only = false;
  bool direct = false;  // cache=none: O_DIRECT on the image file, as QEMU's cache=none
};

// --scsi PATH[,format=raw|qcow2][,cache=none|writeback|writethrough][,readonly]: one LUN on the
// virtio-scsi controller (target 0; the Nth --scsi is LUN N-1).
struct ScsiSpec {
  std::string path;
  std::string format;  // "" = probe
  bool read_only = false;
  bool direct = false;       // cache=none
  bool write_cache = true;   // cache=writethrough: false (WCE off, every write flushed)
};

// --rng [rate=BYTES[/s]][,max-request=BYTES]: a virtio-rng device.
struct RngSpec {
  uint64_t rate = 0;                // bytes per second, 0 = unlimited
  uint32_t max_request = 64 << 10;  // bytes per guest request at most
};

// --console stdio|file=PATH|socket=PATH: a virtio-console device (the guest's hvc0).
struct ConsoleSpec {
  enum class Kind { kStdio, kFile, kSocket };
  Kind kind = Kind::kStdio;
  std::string path;
};

// --serial-port name=NAME,path=SOCK | name=NAME,file=PATH: a named port on the virtio-console
// (virtio-serial MULTIPORT; the guest's /dev/vport*pN, /sys/class/virtio-ports/*/name = NAME).
// path= connects to a listening unix stream socket (both directions); file= takes output only.
struct SerialPortSpec {
  std::string name;
  bool file = false;  // path is a file for output, not a socket
  std::string path;
};

// --net tap[=NAME] | bridge=BR | network=NAME, then [,mac=XX:XX:XX:XX:XX:XX]: a virtio-net
// device on a tap. `tap` makes a tap (the VMM prints its name); `tap=NAME` attaches to that
// existing tap; `bridge=BR` makes a tap and makes it a port of the existing bridge BR;
// `network=NAME` names a network of the state directory (vmm net-define), which `vmm start`
// turns into bridge=ITS-BRIDGE (vmm run itself refuses it).
struct NetSpec {
  std::string tap;      // "" = create one
  std::string bridge;   // the created tap joins this bridge
  std::string network;  // a state-directory network, resolved by vmm start
  std::optional<std::array<uint8_t, 6>> mac;
};
// The --net text of n ("tap", "tap=NAME", "bridge=BR", "network=NAME", then ",mac=...").
std::string net_spec_text(const NetSpec& n);

// --balloon [target=SIZE][,stats=SECONDS]: a virtio-balloon device. target is the guest memory
// to leave the guest (QEMU's balloon command): the balloon asks for --memory minus target.
struct BalloonSpec {
  std::optional<uint64_t> target;  // bytes; none = ask for nothing yet
  uint32_t stats_seconds = 0;      // 0 = never ask for fresh statistics
};

struct MachineConfig {
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  uint64_t memory = 512ull << 20;
  uint32_t cpus = 1;
  std::vector<DiskSpec> disks;
  std::vector<ScsiSpec> scsi;  // LUNs of one virtio-scsi controller
  std::string serial = "stdio";
  std::optional<RngSpec> rng;
  std::optional<ConsoleSpec> console;
  std::vector<SerialPortSpec> serial_ports;  // ports 1..N of the console device, in order
  std::vector<NetSpec> nets;
  std::optional<BalloonSpec> balloon;
  bool hugepages = false;
  // --mem-prealloc: back all guest memory before the guest runs (GuestRam::create).
  bool mem_prealloc = false;
  // Under kvm_pvm, add the parameters Linux needs there (guest_cmdline.h); --no-pvm-workarounds.
  bool pvm_workarounds = true;
  // --control PATH: the control socket (docs/vmm-control.md); empty = none.
  std::string control;
  // --seccomp off|log|on (docs/vmm-security.md): "on" unless asked otherwise.
  std::string seccomp = kDefaultSeccomp;
  // --user / --group: drop root to these once everything is open; empty = stay.
  std::string user, group;
  // --on-reboot: what a guest reset does (a triple fault counts as one, as in QEMU): restart
  // resets the machine in place and boots the kernel again in the same process; destroy ends
  // the VM (exit 0, Firecracker's and QEMU -no-reboot's way). A reboot asked for over the
  // control socket restarts either way.
  OnReboot on_reboot = OnReboot::kDestroy;
};

// "512M", "2G", "1048576", "64K", "1T" (binary units; optional trailing "iB"/"B").
img::Result<uint64_t> parse_size(const std::string& s);
// "PATH[,format=raw|qcow2][,readonly=on|off]"
img::Result<DiskSpec> parse_disk_spec(const std::string& s);
// "PATH[,format=raw|qcow2][,cache=none|writeback|writethrough][,readonly[=on|off]]"
img::Result<ScsiSpec> parse_scsi_spec(const std::string& s);
// "", "on", or "rate=64K[/s][,max-request=4K]"
img::Result<RngSpec> parse_rng_spec(const std::string& s);
// "stdio", "file=PATH" or "socket=PATH"
img::Result<ConsoleSpec> parse_console_spec(const std::string& s);
// "name=NAME,path=SOCK" or "name=NAME,file=PATH"
img::Result<SerialPortSpec> parse_serial_port_spec(const std::string& s);
// "tap", "tap=NAME", either followed by ",mac=02:00:00:00:00:01"
img::Result<NetSpec> parse_net_spec(const std::string& s);
// "", "on", or "target=SIZE[,stats=SECONDS]"
img::Result<BalloonSpec> parse_balloon_spec(const std::string& s);
// Cross-field checks: memory range, CPU count, balloon target within memory, port names.
img::Status validate(const MachineConfig& c);

}  // namespace vmm
