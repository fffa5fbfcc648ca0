// GuestRam: the host mapping behind guest RAM, split around the 32-bit PCI hole: RAM below
// kPciHoleStart sits at guest-physical 0, the rest continues at 4 GiB.
//
// Thread-safety: immutable after create(); the bytes are shared with the guest.
#pragma once

#include <cstdint>
#include <vector>

#include "img/status.h"
#include "kvm/guest_memory.h"

namespace vmm {

// The 32-bit MMIO hole for PCI BARs, [kPciHoleStart, kPciHoleEnd); the IOAPIC, LAPIC and the
// BIOS area follow it up to 4 GiB.
inline constexpr uint64_t kPciHoleStart = 0xC0000000;
inline constexpr uint64_t kPciHoleEnd = 0xFEC00000;
inline constexpr uint64_t k4GiB = 1ull << 32;

class GuestRam {
 public:
  // MAP_NORESERVE anonymous memory; hugepages maps a hugetlbfs memfd of 2 MiB pages shared
  // (size must be a multiple of 2 MiB and that many pages free in /proc/sys/vm/nr_hugepages: they
  // are reserved here, and the regions say 2 MiB pages, shared, for discard). prealloc (QEMU's
  // -mem-prealloc) backs every page now, with MADV_POPULATE_WRITE, so that a host short of
  // memory or of huge pages fails here with an error rather than killing the VM later (SIGBUS or
  // the OOM killer at the guest's first touch); it costs the whole size in RSS at once.
  static img::Result<GuestRam> create(uint64_t size, bool hugepages, bool prealloc = false);
  GuestRam(GuestRam&& o) noexcept;
  GuestRam& operator=(GuestRam&&) = delete;
  ~GuestRam();

  uint64_t size() const { return size_; }
  // Zeroes all of guest RAM for a machine reset by giving the pages back to the host
  // (MADV_DONTNEED; MADV_REMOVE for huge pages), so a rebooted guest costs what a fresh one does.
  // With prealloc, or huge pages (whose reservation goes with the pages), every page is backed
  // again at once, which fails as create() does when the host is short. REQUIRES: no vCPU runs.
  img::Status clear();
  // One region below the hole, and one at 4 GiB if size exceeds kPciHoleStart.
  const GuestMemory& memory() const { return mem_; }

 private:
  GuestRam() = default;
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  bool hugepages_ = false;
  bool prealloc_ = false;
  GuestMemory mem_;
};

}  // namespace vmm
