// The kernel command line a Linux guest gets: the user's, plus what this host needs.
//
// Under kvm_pvm (a software hypervisor, see docs/vmm.md "kvm_pvm workarounds") guest CPL0 code
// runs in KVM's instruction emulator, which cannot run xrstor, stac/clac, cmpxchg16b or popcnt.
// Linux picks those from the host's own CPUID, which the VMM cannot hide there (KVM_SET_CPUID2
// is not what the emulated kernel sees), so the VMM steers Linux with kernel parameters instead.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace vmm {

// What `vmm run` adds to a Linux guest's command line under kvm_pvm.
inline constexpr std::string_view kPvmFlags[] = {"noxsave", "nosmap", "nosmep"};
inline constexpr std::string_view kPvmClearCpuid[] = {"cx16", "popcnt", "smap", "smep"};

struct GuestCmdline {
  std::string cmdline;  // what the guest gets
  std::string added;    // the parameters the VMM added, "" if none
};

// Adds the kvm_pvm parameters when all three hold: the kernel is Linux (bzImage or PVH vmlinux),
// KVM is kvm_pvm, and the user did not turn the workarounds off. Parameters the user already
// gave are not repeated; missing features are merged into a user's own clearcpuid= list; the
// additions go before a " -- " that starts init's arguments.
// "noxsave nosmap nosmep clearcpuid=cx16,popcnt,smap,smep", for messages.
std::string pvm_workaround_params();

//
// tsc_khz (KVM_GET_TSC_KHZ, 0 = unknown) adds tsc_early_khz=: our ACPI is hardware-reduced, so
// Linux starts no PIT and finds no HPET or PM timer to calibrate the TSC against, and the host's
// CPUID (which the guest sees here) has no TSC frequency leaf on AMD; an uncalibrated TSC leaves
// the test kernel waiting forever for its first tick (measured). With it, tsc=unstable too: once
// Linux switched its clocksource to the TSC (tsc-early) at boot, guests with two vCPUs or two
// virtio disks stopped making progress under kvm_pvm (measured, cause unknown); with the TSC
// kept out of the clocksources (jiffies) they boot, run their checks and power off. The
// LAPIC timer still calibrates against the known TSC frequency. A user's own value wins.
GuestCmdline compose_guest_cmdline(std::string_view user, bool linux_guest, bool kvm_pvm,
                                   bool workarounds, uint32_t tsc_khz = 0);

}  // namespace vmm
