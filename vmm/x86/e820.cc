#include "x86/e820.h"

#include "kvm/guest_ram.h"
#include "x86/layout.h"

namespace vmm {

std::vector<E820Entry> build_e820(uint64_t ram_size) {
  std::vector<E820Entry> m;
  m.push_back({0, layout::kEbdaStart, E820Entry::kRam});
  m.push_back({layout::kEbdaStart, layout::kLowRamEnd - layout::kEbdaStart, E820Entry::kReserved});
  m.push_back({layout::kBiosStart, layout::kHighMemStart - layout::kBiosStart,
               E820Entry::kReserved});
  uint64_t low_end = ram_size < kPciHoleStart ? ram_size : kPciHoleStart;
  m.push_back({layout::kHighMemStart, low_end - layout::kHighMemStart, E820Entry::kRam});
  if (ram_size > kPciHoleStart) m.push_back({k4GiB, ram_size - kPciHoleStart, E820Entry::kRam});
  return m;
}

}  // namespace vmm
