#include "x86/mptable.h"

#include <cstring>

#include "img/bytes.h"
#include "x86/layout.h"

namespace vmm {
namespace {

void put16(std::vector<uint8_t>& b, size_t off, uint16_t v) { std::memcpy(&b[off], &v, 2); }

}  // namespace

uint8_t byte_sum(const uint8_t* p, size_t n) {
  uint8_t s = 0;
  for (size_t i = 0; i < n; ++i) s = uint8_t(s + p[i]);
  return s;
}

img::Result<std::vector<uint8_t>> build_mptable(uint32_t cpus, uint64_t base) {
  if (cpus == 0 || cpus > kMaxCpus) {
    return img::invalid_argument(img::strfmt("MP table: %u CPUs, 1..%u supported", cpus, kMaxCpus));
  }
  constexpr size_t kFloat = 16, kHeader = 44, kCpu = 20, kSmall = 8;
  constexpr uint32_t kIsaIrqs = 16;
  const uint8_t ioapic_id = static_cast<uint8_t>(cpus);
  size_t n_entries = cpus + 1 + 1 + (kIsaIrqs - 1) + 2;
  size_t table_len = kHeader + cpus * kCpu + (n_entries - cpus) * kSmall;
  std::vector<uint8_t> b(kFloat + table_len, 0);
  // 4.1 MP Floating Pointer Structure.
  std::memcpy(&b[0], "_MP_", 4);
  img::store_le32(&b[4], static_cast<uint32_t>(base + kFloat));
  b[8] = 1;  // length in 16-byte units
  b[9] = 4;  // spec revision 1.4
  b[10] = uint8_t(-byte_sum(&b[0], kFloat));
  // 4.2 MP Configuration Table Header.
  size_t t = kFloat;
  std::memcpy(&b[t], "PCMP", 4);
  put16(b, t + 4, static_cast<uint16_t>(table_len));
  b[t + 6] = 4;
  std::memcpy(&b[t + 8], "VMM     ", 8);
  std::memcpy(&b[t + 16], "LEAN VMM    ", 12);
  put16(b, t + 34, static_cast<uint16_t>(n_entries));
  img::store_le32(&b[t + 36], static_cast<uint32_t>(layout::kLapicAddr));
  size_t p = t + kHeader;
  for (uint32_t i = 0; i < cpus; ++i, p += kCpu) {  // 4.3.1 Processor Entries
    b[p] = 0;
    b[p + 1] = static_cast<uint8_t>(i);
    b[p + 2] = 0x14;                    // local APIC version
    b[p + 3] = 0x01 | (i == 0 ? 2 : 0);  // enabled, bootstrap processor
    img::store_le32(&b[p + 4], 0x600);  // family 6
    img::store_le32(&b[p + 8], 0x201);  // FPU, APIC
  }
  b[p] = 1;  // 4.3.2 Bus Entry
  std::memcpy(&b[p + 2], "ISA   ", 6);
  p += kSmall;
  b[p] = 2;  // 4.3.3 I/O APIC Entry
  b[p + 1] = ioapic_id;
  b[p + 2] = 0x11;
  b[p + 3] = 1;  // enabled
  img::store_le32(&b[p + 4], static_cast<uint32_t>(layout::kIoapicAddr));
  p += kSmall;
  for (uint32_t irq = 0; irq < kIsaIrqs; ++irq) {  // 4.3.4 I/O Interrupt Assignment Entries
    if (irq == 2) continue;                         // the PIC cascade
    b[p] = 3;
    b[p + 1] = 0;  // INT
    b[p + 4] = 0;  // ISA bus
    b[p + 5] = static_cast<uint8_t>(irq);
    b[p + 6] = ioapic_id;
    b[p + 7] = static_cast<uint8_t>(irq);
    p += kSmall;
  }
  for (uint8_t lint = 0; lint < 2; ++lint, p += kSmall) {  // 4.3.5 Local Interrupt Assignment
    b[p] = 4;
    b[p + 1] = lint == 0 ? 3 : 1;  // ExtINT, NMI
    b[p + 6] = 0xff;               // all local APICs
    b[p + 7] = lint;
  }
  b[t + 7] = uint8_t(-byte_sum(&b[t], table_len));
  return b;
}

}  // namespace vmm
